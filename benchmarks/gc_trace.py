"""Run `rarp-reply` with one log line per full (generation 2) garbage-collector pass.

    python3 gc_trace.py [rarp-reply options]

Used by `bench_reply.py --gc-trace`. A full pass walks every tracked object, and with a
large mirror that is a pause long enough to matter; this makes each one visible in the
daemon's JSON log as {"event": "gc", "generation": 2, "ms": ...}. The daemon itself is
unchanged: the callback only times the passes the interpreter makes anyway.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

from rarp_replay.cli.rarp_reply import main

_started: list[float] = []


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        ms = (time.perf_counter() - _started.pop()) * 1000
        # The same stream as the daemon's log handler, so lines never interleave.
        line = {"event": "gc", "generation": 2, "ms": round(ms, 2), "collected": info["collected"]}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()


if __name__ == "__main__":
    gc.callbacks.append(_on_gc)
    sys.exit(main(sys.argv[1:]))
