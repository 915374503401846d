"""Run the real `rarp-reply` daemon in a namespace and follow its JSON log."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support import netlab


class DaemonProc:
    def __init__(self, ns: netlab.Netns, *args: str) -> None:
        self.ns = ns
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.proc = ns.popen(
            sys.executable,
            "-m",
            "rarp_replay",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            *args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))
                self._cond.notify_all()

    def wait_event(
        self,
        event: str,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
        count: int = 1,
    ) -> list[dict[str, Any]]:
        deadline = netlab.deadline(timeout)
        with self._cond:
            while True:
                got = [
                    e
                    for e in self.events
                    if e.get("event") == event and (match is None or match(e))
                ]
                if len(got) >= count:
                    return got
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"daemon exited ({self.proc.returncode}):\n" + "".join(self.raw[-20:])
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {count}x {event!r} within {timeout}s; log tail:\n"
                        + "".join(self.raw[-20:])
                    )
                self._cond.wait(min(left, 0.2))

    def of(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == event]

    def ready(self, timeout: float = 15.0) -> DaemonProc:
        self.wait_event("ready", timeout=timeout)
        return self

    def stop(self, timeout: float = 10.0) -> int:
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc
