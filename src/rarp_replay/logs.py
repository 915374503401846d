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
from collections.abc import Callable
from typing import TextIO

LOGGER_NAME = "rarp_replay"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    # The date part changes once a second: formatting it per line (gmtime,
    # strftime) was a measurable share of a 10,000-line burst.
    global _second
    sec = int(created)
    if _second[0] != sec:
        _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_second[1]}.{int(created % 1 * 1000):03d}Z"


def _logfmt_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if text == "" or " " in text or "=" in text or '"' in text:
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
        return self.line(record.created, record.levelname.lower(), event, fields)

    def line(self, created: float, level: str, event: str, fields: dict[str, object]) -> str:
        """One formatted line (without the newline)."""
        if self.json:
            if not fields or "ts" in fields or "level" in fields or "event" in fields:
                obj: dict[str, object] = {"ts": _timestamp(created), "level": level}
                obj["event"] = event
                obj.update(fields)
                return _json_encode(obj)
            # The same text without copying the fields into a new dict: the fixed
            # keys first (their JSON made once per level and event), then the fields.
            head = _json_heads.get((level, event))
            if head is None:
                head = _json_heads[(level, event)] = (
                    f", {_json_encode({'level': level, 'event': event})[1:-1]}, "
                )
            return '{"ts": "' + _timestamp(created) + '"' + head + _json_encode(fields)[1:]
        parts = [_timestamp(created), f"level={level}", f"event={event}"]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _make_json_encode() -> Callable[[dict[str, object]], str]:
    """`json.dumps(obj, default=str)`, without building a JSONEncoder per call: json's
    C encoder (what `dumps` uses when available), made once."""
    c_make = getattr(json.encoder, "c_make_encoder", None)
    if c_make is None:  # pragma: no cover - CPython always has the C accelerator
        return json.JSONEncoder(default=str).encode
    c_encode = c_make(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def encode(obj: dict[str, object]) -> str:
        return "".join(c_encode(obj, 0))

    return encode


_json_encode = _make_json_encode()
_json_heads: dict[tuple[str, str], str] = {}


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


_NAMES = {v: k for k, v in LEVELS.items()}


def emit(logger: logging.Logger, event: str, level: str = "info", **fields: object) -> None:
    emit_fields(logger, event, level, fields)


def emit_fields(logger: logging.Logger, event: str, level: str, fields: dict[str, object]) -> None:
    """`emit` with the fields as a dict (not copied: the caller must not change it)."""
    lvl = LEVELS.get(level, logging.INFO)
    if not logger.isEnabledFor(lvl):
        return
    h = _handler
    if (
        h is not None
        and logger.handlers == [h]
        and not logger.filters
        and not h.filters
        and lvl >= h.level
        and isinstance(h.formatter, _Formatter)
    ):
        # The daemon's own set-up (`setup`): write the line directly. Going through
        # `Logger.log` (a LogRecord, the caller's frame looked up, the handler's lock)
        # cost ~15 us a line, most of the daemon's time per RARP in a burst. Output
        # is the same: `_Formatter.format` makes the same line from a record.
        try:
            line = h.formatter.line(time.time(), _NAMES[lvl], event, fields)
            with h.lock:  # type: ignore[union-attr]
                h.stream.write(line + "\n")
                if not h.batching:
                    h.stream.flush()
            return
        except Exception:  # let logging report it the usual way, below
            pass
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
