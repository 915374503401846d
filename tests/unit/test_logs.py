"""Log lines: the direct path `emit` takes with the daemon's own handler writes what
going through `logging` writes, and steps aside when someone else listens too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from rarp_replay import logs

FIELDS: dict[str, object] = {
    "mac": "52:54:00:12:34:56",
    "domain": "br100",
    "bindings": ["192.0.2.10(remote)", "2001:db8::10(probing)"],
    "probes": 2,
    "after_ms": 61.5,
    "detail": 'a "quoted" = value',
    "empty": "",
    "none": None,
}


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    logging.getLogger(logs.LOGGER_NAME).handlers.clear()
    logs._handler = None


def reference(fmt: str, level: str, event: str, fields: dict[str, object]) -> str:
    """The line as the formatter wrote it before the direct path, timestamp left out."""
    if fmt == "json":
        return json.dumps({"level": level, "event": event, **fields}, default=str)
    parts = [f"level={level}", f"event={event}"]
    for k, v in fields.items():
        text = ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        if text == "" or any(c in text for c in ' ="'):
            text = json.dumps(text)
        parts.append(f"{k}={text}")
    return " ".join(parts)


def without_ts(line: str, fmt: str) -> str:
    if fmt == "json":
        head, rest = line.split(", ", 1)
        assert head.startswith('{"ts": "') and head.endswith('Z"')
        return "{" + rest
    ts, rest = line.split(" ", 1)
    assert ts.endswith("Z") and len(ts) == len("2026-01-01T00:00:00.000Z")
    return rest


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("level", ["info", "warning", "error"])
@pytest.mark.parametrize("fields", [FIELDS, {}, {"ts": "x", "n": 1}])
def test_direct_lines_are_the_formatters_lines(
    fmt: str, level: str, fields: dict[str, object], restore: None
) -> None:
    out = io.StringIO()
    log = logs.setup("info", fmt, stream=out)
    logs.emit(log, "announcement", level, **fields)
    (line,) = out.getvalue().splitlines()
    # A record through logging itself (another handler present) formats the same.
    record = logging.LogRecord(logs.LOGGER_NAME, logs.LEVELS[level], __file__, 1, "x", None, None)
    record.event = "announcement"
    record.fields = fields
    via_logging = logs._Formatter(fmt).format(record)
    if "ts" in fields and fmt == "json":  # a field named like a fixed key replaces its value
        assert json.loads(line) == {"ts": "x", "level": level, "event": "announcement", "n": 1}
        assert via_logging == line
    else:
        assert without_ts(line, fmt) == reference(fmt, level, "announcement", fields)
        assert without_ts(via_logging, fmt) == without_ts(line, fmt)


def test_levels_below_the_threshold_write_nothing(restore: None) -> None:
    out = io.StringIO()
    log = logs.setup("info", "json", stream=out)
    logs.emit(log, "probe", "debug", target="192.0.2.10")
    assert out.getvalue() == ""
    log = logs.setup("debug", "json", stream=out)
    logs.emit(log, "probe", "debug", target="192.0.2.10")
    assert json.loads(out.getvalue())["level"] == "debug"


def test_another_handler_gets_the_record_too(restore: None) -> None:
    out = io.StringIO()
    log = logs.setup("info", "text", stream=out)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log.addHandler(Keep())
    logs.emit(log, "confirmed", "info", address="192.0.2.10")
    assert [r.event for r in seen] == ["confirmed"]  # type: ignore[attr-defined]
    assert "event=confirmed address=192.0.2.10" in out.getvalue()


def test_batched_lines_wait_for_flush(tmp_path: object, restore: None) -> None:
    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            Counting.flushes += 1

    out = Counting()
    log = logs.setup("info", "json", stream=out)
    logs.batch(True)
    for i in range(3):
        logs.emit(log, "announcement", "info", n=i)
    assert Counting.flushes == 0
    logs.flush()
    assert Counting.flushes == 1
    logs.batch(False)
    logs.emit(log, "stopped", "info")
    assert Counting.flushes >= 3  # unbatched: a flush per line again
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == [
        "announcement",
        "announcement",
        "announcement",
        "stopped",
    ]


def test_plain_messages_still_format(restore: None) -> None:
    out = io.StringIO()
    log = logs.setup("info", "text", stream=out)
    log.warning("hello %s", "world")
    assert 'level=warning event=message msg="hello world"' in out.getvalue()
