"""`sched.request_slice`: the short EEVDF slice the daemon asks for, best effort.

Run in a thread of its own: the request applies to the calling thread only
(sched_setattr with pid 0), so the test process keeps its own slice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from rarp_replay import sched

T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    out: list[T] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout=10)
    assert out, "the thread did not finish"
    return out[0]


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def test_slice_is_granted_where_the_kernel_has_custom_slices() -> None:
    def ask() -> tuple[int | None, int | None, int | None]:
        before = sched.current_slice_ns()
        got = sched.request_slice(500)
        return before, got, sched.current_slice_ns()

    before, got, after = in_thread(ask)
    if _kernel() >= (6, 12) and before is not None:
        # EEVDF custom slices: granted, and sched_getattr reads it back.
        assert got == 500
        assert after == 500_000
        assert before != 500_000  # the default slice, not something left by another test
    else:
        # Older kernels ignore sched_runtime for fair tasks: reported as not granted.
        assert got is None
    # The request changed only that thread.
    assert sched.current_slice_ns() == before


def test_other_values_and_the_nice_value_is_kept() -> None:
    def ask() -> tuple[int | None, int | None, int]:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
        got = sched.request_slice(2000)
        return got, sched.current_slice_ns(), os.getpriority(os.PRIO_PROCESS, 0)

    got, now, nice = in_thread(ask)
    assert nice == 5  # sched_setattr sets the nice value too: ours is passed through
    if got is not None:
        assert got == 2000 and now == 2_000_000


def test_a_policy_outside_the_fair_class_is_left_alone() -> None:
    def ask() -> tuple[int | None, int]:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return sched.request_slice(500), os.sched_getscheduler(0)

    got, policy = in_thread(ask)
    assert got is None and policy == os.SCHED_IDLE
