"""Log records as one JSON object a line, or as readable text in a terminal, set up in one place
for the server's processes, the jobs and the command line.

A record carries its `extra` fields, and the fields bound to the work in hand (`bind`): a
request's id, a job's name and run id; so every line a request or a job run writes names it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

_bound: ContextVar[Mapping[str, Any]] = ContextVar("log_fields", default=MappingProxyType({}))

# What every LogRecord has; anything else on a record came with `extra` (but uvicorn's copy of
# its message with terminal colours).
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add `fields` to every record written in this context from now on; `unbind` the token
    to take them off."""
    return _bound.set(MappingProxyType({**_bound.get(), **fields}))


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _bound.reset(token)


def bound(name: str) -> Any:
    """A field bound to the current context, or None."""
    return _bound.get().get(name)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's bound and `extra` fields."""
    fields = dict(_bound.get())
    fields.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(fields_of(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(f"{name}={value}" for name, value in fields.items())
        return text


def formatter(log_format: LogFormat = "auto") -> logging.Formatter:
    """JSON when asked, or when stderr is not a terminal (a service's log collector); text
    otherwise."""
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        return JsonFormatter()
    return TextFormatter()


def configured_formatter() -> logging.Formatter:
    """The formatter CLEARINGHOUSE_LOG_FORMAT asks for (a logging configuration's factory)."""
    from clearinghouse.config import get_settings

    return formatter(get_settings().log_format)


def configure(level: int) -> None:
    """Write records of `level` and above to stderr, in the configured format; as
    logging.basicConfig, nothing changes when the root logger has handlers already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(configured_formatter())
    root.addHandler(handler)
    root.setLevel(level)


def server_config(level: int = logging.INFO) -> dict[str, Any]:
    """The same, as a logging configuration for uvicorn, which applies it in every worker
    process (its own loggers included)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{__name__}.configured_formatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": logging.getLevelName(level)},
        # Each worker checks the schema's revision at start; alembic's notes on it are noise.
        "loggers": {"alembic": {"level": "WARNING"}},
    }
