"""Earlier migrations read by later ones, for the SQL text they share (a function's parameters,
a trigger's condition): loaded from their files, since their names are not module names."""

import importlib.util
from pathlib import Path
from types import ModuleType


def load(filename: str) -> ModuleType:
    """The migration in versions/`filename`."""
    path = Path(__file__).with_name("versions") / filename
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
