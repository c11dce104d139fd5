"""Instants and business dates: now, the coalition's time zone (Asia/Shanghai), today's business
date there, and instants around calendar-month ends written out independently of the code."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def now() -> datetime:
    return datetime.now(UTC)


def business_today() -> date:
    """The current business date in the coalition's time zone."""
    return datetime.now(SHANGHAI).date()


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def earlier_month(now: datetime) -> datetime:
    """An instant that a partner may still report (within 30 days) in an earlier calendar month
    (Asia/Shanghai) than `now`, when there is one: only on the 31st is the previous month out of
    reach, and then the instant falls on the 1st of this month."""
    month_start = now.astimezone(SHANGHAI).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    candidate = month_start - timedelta(hours=1)
    if now - candidate < timedelta(days=29):
        return candidate
    return now - timedelta(days=29)


def end_of_month_after(instant: datetime, months: int) -> datetime:
    """The end of the calendar month (Asia/Shanghai) `months` after the one of `instant`, as the
    first instant of the month that follows it; written out independently of the code."""
    local = instant.astimezone(SHANGHAI)
    year, month = local.year, local.month + months + 1
    while month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=SHANGHAI)
