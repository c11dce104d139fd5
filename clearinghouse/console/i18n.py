"""Labels are written in English and marked for translation (`gettext` in Python, `{% trans %}`
and `_()` in templates); `locale/messages.pot` is the catalogue a translator starts from, and a
compiled `locale/<lang>/LC_MESSAGES/messages.mo` is used when the settings name that language."""

from __future__ import annotations

import gettext as _gettext
from functools import lru_cache
from pathlib import Path

from clearinghouse.config import get_settings

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"


@lru_cache(maxsize=8)
def translations(language: str | None) -> _gettext.NullTranslations:
    """The catalogue for `language`, or English (the source strings) when there is none."""
    if not language:
        return _gettext.NullTranslations()
    return _gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


def current() -> _gettext.NullTranslations:
    return translations(get_settings().language)


def gettext(message: str) -> str:
    return current().gettext(message)


def N_(message: str) -> str:
    """Mark a label for the catalogue where it is defined; it is translated where shown."""
    return message
