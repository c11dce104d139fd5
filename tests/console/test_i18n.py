"""Labels are ready for translation: the committed catalogue holds every marked label, and a
page rendered through a catalogue shows translated words only, not stray English."""

from __future__ import annotations

import gettext
import re

import pytest
from babel.messages.pofile import read_po

from clearinghouse.console import catalogue, render


def test_the_committed_catalogue_matches_the_code() -> None:
    with catalogue.TEMPLATE_PATH.open("rb") as committed:
        kept = {m.id for m in read_po(committed) if m.id}
    found = {m.id for m in catalogue.extract() if m.id}
    assert kept == found, "run `clearinghouse console catalogue` and commit the result"


class Bracketed(gettext.NullTranslations):
    """A pseudo-translation: every label comes back in brackets."""

    def gettext(self, message: str) -> str:
        return f"[{message}]"

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return f"[{singular if n == 1 else plural}]"


def test_every_label_of_the_sign_in_page_goes_through_the_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render.environment.cache_clear()
    monkeypatch.setattr("clearinghouse.console.i18n.current", lambda: Bracketed())
    try:
        html = (
            render.environment()
            .get_template("sign_in.html")
            .render(me=None, csrf_token=None, signin_token="t", next_path="/console/", error=None)
        )
    finally:
        render.environment.cache_clear()
    text = re.sub(r"<[^>]+>", "\n", re.sub(r"<(title|style)>.*?</\1>", "", html, flags=re.S))
    words = [line.strip() for line in text.splitlines() if line.strip()]
    untranslated = [w for w in words if not (w.startswith("[") and w.endswith("]"))]
    assert untranslated == []
