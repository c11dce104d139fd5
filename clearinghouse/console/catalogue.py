"""The translation catalogue: every label marked in the console's Python and templates,
gathered into `locale/messages.pot` (`clearinghouse console catalogue` rewrites it; a test
fails when it falls behind the code)."""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import write_po

from clearinghouse.console.i18n import DOMAIN, LOCALE_DIR
from settlement.categories import CATEGORIES

SOURCE = Path(__file__).parent
TEMPLATE_PATH = LOCALE_DIR / f"{DOMAIN}.pot"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true"}}
# Labels the console shows but does not define: the settlement categories' headings.
CATEGORIES_SOURCE = "settlement/categories.py"


def extract() -> Catalog:
    catalog = Catalog(project="clearinghouse console", charset="utf-8", fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
        SOURCE, METHODS, OPTIONS, comment_tags=("Translators:",), strip_comment_tags=True
    ):
        catalog.add(
            message,
            None,
            [(filename, lineno)],
            auto_comments=comments,
            context=context,
        )
    for category in CATEGORIES:
        catalog.add(category.label, None, [(CATEGORIES_SOURCE, 0)])
    return catalog


def render(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, width=100, sort_output=True, include_lineno=False)
    return out.getvalue()


def write(path: Path = TEMPLATE_PATH) -> int:
    """Rewrite the catalogue template; how many labels it holds."""
    catalog = extract()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render(catalog))
    return len(catalog)
