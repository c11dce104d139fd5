"""Labels are written in English and marked for translation (`gettext` in Python, `{% trans %}`
and `_()` in templates); `locale/messages.pot` is the catalogue a translator starts from, and
`locale/<lang>/LC_MESSAGES/messages.po` is used when the settings name that language.

The .po is compiled in memory, once per process: no binary .mo is kept beside it, so the
translation a reviewer reads is the one the console shows."""

from __future__ import annotations

import gettext as _gettext
import io
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from clearinghouse.config import get_settings

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def normalise(language: str | None) -> str | None:
    """`zh-CN`, `zh_CN` and `zh_CN.UTF-8` all name the catalogue `zh_CN`."""
    if not language:
        return None
    tag, _, _encoding = language.partition(".")
    base, _, region = tag.replace("-", "_").partition("_")
    return f"{base.lower()}_{region.upper()}" if region else base.lower()


def html_lang() -> str:
    """The page's `lang` attribute: what the console is shown in (BCP 47, `zh-CN`)."""
    language = normalise(get_settings().language)
    if language is None or not catalogue_path(language).is_file():
        return "en"
    return language.replace("_", "-")


def in_chinese() -> bool:
    """Whether the console is shown in Chinese: data written in both languages (a reward's
    title) is then shown in Chinese, and in English otherwise."""
    return html_lang().startswith("zh")


@lru_cache(maxsize=8)
def translations(language: str | None) -> _gettext.NullTranslations:
    """The catalogue for `language`, or English (the source strings) when there is none."""
    language = normalise(language)
    if language is None:
        return _gettext.NullTranslations()
    path = catalogue_path(language)
    if not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return _gettext.GNUTranslations(compiled)


def current() -> _gettext.NullTranslations:
    return translations(get_settings().language)


def gettext(message: str) -> str:
    return current().gettext(message)


def N_(message: str) -> str:
    """Mark a label for the catalogue where it is defined; it is translated where shown."""
    return message


# Codes the pages show (states, decisions, kinds of break), in words a person reads.
LABELS = {
    "computed": N_("computed"),
    "approved": N_("approved"),
    "rejected": N_("rejected"),
    "paid": N_("paid"),
    "failed": N_("failed"),
    "open": N_("open"),
    "blocked": N_("blocked"),
    "review": N_("review"),
    "block": N_("block"),
    "allow": N_("allow"),
    "missing_ours": N_("not in our records"),
    "missing_theirs": N_("not in the partner's file"),
    "amount_differs": N_("amount differs"),
    "points_differ": N_("points differ"),
    "duplicate": N_("repeated in the partner's file"),
    "finance": N_("finance"),
    "approver": N_("approver"),
    "auditor": N_("auditor"),
    "operator": N_("operator"),
    "pending": N_("pending"),
    "delivered": N_("delivered"),
    "active": N_("active"),
    "disabled": N_("disabled"),
    "withdrawn": N_("withdrawn"),
    "coupon": N_("coupon"),
    "voucher": N_("voucher"),
    "goods": N_("goods"),
    "membership": N_("membership"),
    "charity": N_("donation"),
    "reserved": N_("reserved"),
    "confirmed": N_("confirmed"),
    "cancelled": N_("cancelled"),
    "expired": N_("expired"),
    "returned": N_("returned"),
    "placed": N_("placed"),
    "shipped": N_("shipped"),
    "ready": N_("ready for pick-up"),
    "collected": N_("collected"),
    "accrual": N_("accrual"),
    "hold": N_("hold"),
    "redemption": N_("redemption"),
    "refund": N_("refund"),
    "exchange": N_("exchange"),
    "in": N_("in (programme points to coalition points)"),
    "out": N_("out (coalition points to programme points)"),
}


def label(code: str, using: _gettext.NullTranslations | None = None) -> str:
    """A code in words, through `using` (the console's language by default); a code without a
    label is shown as it is."""
    if code not in LABELS:
        return code
    return (using or current()).gettext(LABELS[code])
