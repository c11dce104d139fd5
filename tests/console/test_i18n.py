"""Labels are ready for translation: the committed catalogue holds every marked label, a page
rendered through a catalogue shows translated words only, not stray English, and the Simplified
Chinese catalogue translates every label and is what the console shows when asked for."""

from __future__ import annotations

import gettext
import re

import pytest
from babel.messages.pofile import read_po

from clearinghouse.config import get_settings
from clearinghouse.console import catalogue, i18n, render
from tests.builders.console import console_language

# Each printf directive of a label: its named placeholders and any other `%` sign.
DIRECTIVE = re.compile(r"%(?:\(\w+\))?.")


def directives(label: object) -> list[str]:
    """A label's printf directives (none of the console's labels has plural forms)."""
    return sorted(DIRECTIVE.findall(str(label)))


def sign_in_page() -> str:
    return (
        render.environment()
        .get_template("sign_in.html")
        .render(me=None, csrf_token=None, signin_token="t", next_path="/console/", error=None)
    )


def visible_words(html: str) -> list[str]:
    """The page's text a reader sees in the body, one piece per element."""
    text = re.sub(r"<[^>]+>", "\n", re.sub(r"<(title|style)>.*?</\1>", "", html, flags=re.S))
    return [line.strip() for line in text.splitlines() if line.strip()]


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
        html = sign_in_page()
    finally:
        render.environment.cache_clear()
    untranslated = [w for w in visible_words(html) if not (w.startswith("[") and w.endswith("]"))]
    assert untranslated == []


def test_the_chinese_catalogue_translates_every_label_of_the_template() -> None:
    with catalogue.TEMPLATE_PATH.open("rb") as committed:
        template = read_po(committed)
    with i18n.catalogue_path("zh_CN").open("rb") as po:
        chinese = read_po(po)
    assert chinese.locale_identifier == "zh_CN"
    assert chinese.plural_forms == "nplurals=1; plural=0;"
    assert not chinese.fuzzy

    problems = []
    for message in template:
        if not message.id:
            continue
        translated = chinese.get(message.id)
        if translated is None or not translated.string:
            problems.append(f"untranslated: {message.id!r}")
        elif translated.fuzzy:
            problems.append(f"fuzzy: {message.id!r}")
        elif directives(message.id) != directives(translated.string):
            problems.append(f"placeholders differ: {message.id!r} -> {translated.string!r}")
    assert problems == []


def test_in_chinese_the_sign_in_page_has_no_english_left() -> None:
    with console_language("zh_CN"):
        html = sign_in_page()
        zone = get_settings().timezone
    assert "<title>登录 · 清算中心</title>" in html
    assert '<html lang="zh-CN">' in html
    words = visible_words(html)
    assert "登录" in words
    # The time zone's name (in the footer) is the one Latin word a Chinese page keeps.
    english = [w for w in words if re.search(r"[A-Za-z]", w.replace(zone, ""))]
    assert english == []


def test_in_chinese_labels_from_python_are_chinese_and_english_returns_afterwards() -> None:
    with console_language("zh_CN"):
        assert i18n.label("approved") == "已批准"
        assert i18n.gettext("Settlements") == "结算"
        assert i18n.gettext("Page %(page)s of %(pages)s") % {"page": 1, "pages": 2} == (
            "第 1 页，共 2 页"
        )
    assert i18n.label("approved") == "approved"
    assert i18n.gettext("Settlements") == "Settlements"


def test_a_language_without_a_catalogue_is_english() -> None:
    assert i18n.translations("fr_FR").gettext("Settlements") == "Settlements"
    assert i18n.translations(None).gettext("Settlements") == "Settlements"
    with console_language("fr_FR"):
        assert '<html lang="en">' in sign_in_page()


@pytest.mark.parametrize("spelling", ["zh_CN", "zh-CN", "zh_CN.UTF-8", "ZH-cn"])
def test_the_usual_spellings_of_a_language_find_its_catalogue(spelling: str) -> None:
    assert i18n.translations(spelling).gettext("Settlements") == "结算"
