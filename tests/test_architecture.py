"""Imports point one way, downward (docs/architecture.md): the ground floor knows no domain, the
HTTP kit knows no domain, a domain imports only the domains listed before it, and only the top
floor composes them all. Read from the source with `ast`, imports inside functions included."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("clearinghouse", "partners", "settlement")

# Bottom to top. A module may import its own layer and the layers below it.
GROUND = (
    "clearinghouse.config",
    "clearinghouse.database",
    "clearinghouse.errors",
    "clearinghouse.numbers",
    "clearinghouse.clock",
    "clearinghouse.files",
    "clearinghouse.ids",
    "clearinghouse.structured_fields",
    "clearinghouse.schema",
    "clearinghouse.reference",
    "clearinghouse.migrate",
    "clearinghouse.cli_support",
    "clearinghouse.logs",
    "clearinghouse.settleable",
    "clearinghouse.ledger",
)
KIT = ("clearinghouse.api", "clearinghouse.http_limits")
# In dependency order: each domain may import the ones before it, never one after it.
DOMAINS = (
    "clearinghouse.users",
    "clearinghouse.rules",
    "partners",
    "clearinghouse.webhooks",
    "clearinghouse.members",
    "clearinghouse.fraud",
    "clearinghouse.points",
    "clearinghouse.rewards",
    "clearinghouse.batches",
    "clearinghouse.audit",
    "settlement",
    "clearinghouse.console",
)
TOP = (
    "clearinghouse.app",
    "clearinghouse.cli",
    "clearinghouse.server",
    "clearinghouse.jobs",
    "clearinghouse.jobs_cli",
    "clearinghouse.db_cli",
    "clearinghouse.demo",
    "clearinghouse.tables",
    "clearinghouse.__main__",
    "clearinghouse",
)
LAYERS = (GROUND, KIT, DOMAINS, TOP)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project's modules that `path` imports (a name imported from a package counts as its
    submodule when it is one)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                target = submodule if submodule in modules else node.module
                if target in modules:
                    yield target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)


def _place(module: str) -> tuple[int, int]:
    """(layer, rank within the layer) of the longest prefix that names the module."""
    best: tuple[int, int, int] | None = None
    for layer, names in enumerate(LAYERS):
        for rank, name in enumerate(names):
            names_it = module == name or module.startswith(name + ".")
            if names_it and (best is None or len(name) > best[2]):
                best = (layer, rank, len(name))
    assert best is not None, f"{module} is on no floor: add it to tests/test_architecture.py"
    return best[0], best[1]


def _upward(importer: str, imported: str) -> bool:
    (layer, rank), (to_layer, to_rank) = _place(importer), _place(imported)
    if layer == LAYERS.index(DOMAINS) == to_layer:
        return to_rank > rank
    return to_layer > layer


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(path, modules)) - {name} for name, path in modules.items()}


def test_imports_point_downward() -> None:
    wrong = {
        (importer, imported)
        for importer, targets in _graph().items()
        for imported in targets
        if _upward(importer, imported)
    }
    assert sorted(wrong) == [], "imports pointing upward or to a later domain"


def _domain(module: str) -> str | None:
    layer, rank = _place(module)
    return DOMAINS[rank] if layer == LAYERS.index(DOMAINS) else None


def test_a_domain_reads_another_domains_tables_only_through_its_service() -> None:
    across = {
        (importer, imported)
        for importer, targets in _graph().items()
        for imported in targets
        if imported.endswith(".tables")
        and _domain(importer) is not None
        and _domain(imported) not in (None, _domain(importer))
    }
    assert sorted(across) == [], "a domain importing another domain's tables"


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_check_tells_up_from_down() -> None:
    assert _upward("clearinghouse.ledger.posting", "clearinghouse.points.accrual")
    assert _domain("settlement.liability") == "settlement"
    assert _domain("clearinghouse.points.tables") == "clearinghouse.points"
    assert _domain("clearinghouse.ledger.tables") is None
    assert _upward("clearinghouse.api.guard", "partners.gate")
    assert _upward("clearinghouse.fraud.service", "clearinghouse.points.holds")
    assert _upward("settlement.netting", "clearinghouse.app")
    assert not _upward("clearinghouse.points.accrual", "clearinghouse.fraud.service")
    assert not _upward("clearinghouse.app", "settlement.endpoints")
    assert not _upward("partners.gate", "clearinghouse.api.guard")
