"""Templates: Jinja2 with autoescaping, gettext-marked labels, and the console's filters for
money, points and instants."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from clearinghouse.config import get_settings
from clearinghouse.console import formatting, i18n
from clearinghouse.numbers import plain_decimal

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.current(), newstyle=True)  # type: ignore[attr-defined]
    env.filters["label"] = i18n.label
    env.filters["yuan"] = formatting.yuan
    env.filters["points"] = formatting.points
    env.filters["amount"] = formatting.amount
    env.filters["rate"] = plain_decimal
    env.filters["local_time"] = formatting.local_time
    env.globals["time_zone"] = get_settings().timezone
    env.globals["html_lang"] = i18n.html_lang()
    return env


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The template rendered for this request; the signed-in person (if any) and the CSRF
    token their forms carry are in the context."""
    console = getattr(request.state, "console", None)
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            me=None if console is None else console.user,
            csrf_token=None if console is None else console.csrf_token,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code)
