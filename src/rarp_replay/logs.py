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


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    return logger


def emit(logger: logging.Logger, event: str, level: str = "info", **fields: object) -> None:
    lvl = LEVELS.get(level, logging.INFO)
    if logger.isEnabledFor(lvl):
        logger.log(lvl, event, extra={"event": event, "fields": fields})
