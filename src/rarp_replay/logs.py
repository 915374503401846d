"""Structured logging: one line per event, logfmt (default) or JSON.

Every line has an `event` key (announcement, dropped, confirmed, ...) so that
operators can grep or ship them; `--log-format json` gives one JSON object
per line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

LOGGER_NAME = "rarp_replay"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _timestamp(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def _logfmt_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if text == "" or any(c in text for c in ' ="'):
        return json.dumps(text)
    return text


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or "message"
        fields: dict[str, object] = dict(getattr(record, "fields", None) or {})
        if not getattr(record, "event", None):
            fields["msg"] = record.getMessage()
        if self.json:
            obj: dict[str, object] = {
                "ts": _timestamp(record.created),
                "level": record.levelname.lower(),
                "event": event,
            }
            obj.update(fields)
            return json.dumps(obj, default=str)
        parts = [_timestamp(record.created), f"level={record.levelname.lower()}", f"event={event}"]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in fields.items()]
        return " ".join(parts)


class _BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes without a flush per line: the daemon calls `flush()` once per loop
    iteration, so a burst of 10,000 announcements is not 10,000 write(2) calls
    (stderr is line-buffered even when not a terminal, since Python 3.9)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.batching = False

    def flush(self) -> None:
        if not self.batching:
            super().flush()

    def flush_batch(self) -> None:
        super().flush()


_handler: _BatchedHandler | None = None


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Logger:
    global _handler
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = _handler = _BatchedHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    return logger


def emit(logger: logging.Logger, event: str, level: str = "info", **fields: object) -> None:
    lvl = LEVELS.get(level, logging.INFO)
    if logger.isEnabledFor(lvl):
        logger.log(lvl, event, extra={"event": event, "fields": fields})


def batch(on: bool) -> None:
    """Start (True) or end (False, flushing) batched log output."""
    if _handler is not None:
        _handler.batching = on
        if not on:
            _handler.flush_batch()


def flush() -> None:
    """Write out what a batch holds (call once per event-loop iteration)."""
    if _handler is not None:
        _handler.flush_batch()
