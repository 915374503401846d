"""Ask the kernel for a short scheduler time slice (sched_setattr(2)), best effort.

Why: the daemon sleeps in poll() and runs for a few hundred microseconds per RARP.
Woken on a busy CPU with the default slice (EEVDF's base slice, 3 ms scaled by the
CPU count), it does not preempt the task running there: measured with ftrace on a
loaded switch namespace, it waited 32-93 us before running, and a 0.5 ms slice cut
the reaction median by 28 us (issue 11). Since Linux 6.12 (EEVDF custom slices:
"sched/eevdf: Use sched_attr::sched_runtime to set request/slice suggestion"), a
SCHED_OTHER task may ask for its own slice through `sched_attr.sched_runtime`. A
shorter slice gives it an earlier virtual deadline, so it is picked sooner when it
wakes (pick_eevdf()), and costs the other tasks nothing in CPU share (the weight,
i.e. the nice value, is unchanged).

Older kernels ignore `sched_runtime` for fair tasks (the call succeeds and nothing
changes) or reject the call (EINVAL, E2BIG, ENOSYS, EPERM under a seccomp filter):
`request_slice` reads the slice back with sched_getattr(2), which reports a fair
task's slice in `sched_runtime` since 6.12, and says whether the request took.
Nothing here is ever fatal.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["SCHED_SLICE_US", "current_slice_ns", "request_slice"]

# The slice the daemon asks for: well above its per-RARP CPU time, so that one
# wake-up's work normally fits in one slice; the kernel clamps requests to
# 0.1-100 ms (__setscheduler_params(), kernel/sched/syscalls.c).
SCHED_SLICE_US = 500

# Fair-class policies (include/uapi/linux/sched.h); a custom slice applies to both.
SCHED_OTHER = 0
SCHED_BATCH = 3
_FAIR = (SCHED_OTHER, SCHED_BATCH)

# System call numbers of sched_setattr / sched_getattr (arch/*/syscall tables).
_SYSCALLS = {
    "x86_64": (314, 315),
    "aarch64": (274, 275),  # asm-generic/unistd.h
    "riscv64": (274, 275),  # asm-generic/unistd.h
    "i386": (351, 352),
    "i686": (351, 352),
    "armv7l": (380, 381),
    "ppc64le": (355, 356),
    "s390x": (345, 346),
}


class _SchedAttr(ctypes.Structure):
    """struct sched_attr up to sched_period: SCHED_ATTR_SIZE_VER0 (48 octets), which
    every kernel with the call accepts (sched_copy_attr())."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _numbers() -> tuple[int, int] | None:
    return _SYSCALLS.get(platform.machine())


def _getattr() -> _SchedAttr | None:
    nrs = _numbers()
    if nrs is None:
        return None
    attr = _SchedAttr()
    # sched_getattr(pid 0 = the calling thread, attr, size, flags 0)
    rc = _libc.syscall(
        ctypes.c_long(nrs[1]),
        ctypes.c_int(0),
        ctypes.byref(attr),
        ctypes.c_uint(ctypes.sizeof(attr)),
        ctypes.c_uint(0),
    )
    return attr if rc == 0 else None


def current_slice_ns() -> int | None:
    """The calling thread's slice as sched_getattr reports it (0 before Linux 6.12,
    None where the call is unavailable or the thread is not in the fair class)."""
    attr = _getattr()
    if attr is None or attr.sched_policy not in _FAIR:
        return None
    return int(attr.sched_runtime)


def request_slice(us: int = SCHED_SLICE_US) -> int | None:
    """Ask for a `us` microsecond slice for the calling thread; the slice in
    microseconds the kernel then reports, or None if it did not take (an older
    kernel, an unknown architecture, a real-time or deadline policy left alone).

    The policy and nice value are kept as they are: sched_setattr sets both, and
    raising the priority would need CAP_SYS_NICE and is not what this is for.
    """
    nrs = _numbers()
    attr = _getattr()
    if nrs is None or attr is None or attr.sched_policy not in _FAIR:
        return None
    want = _SchedAttr()
    want.size = ctypes.sizeof(want)
    want.sched_policy = attr.sched_policy
    want.sched_nice = attr.sched_nice
    want.sched_runtime = us * 1000
    rc = _libc.syscall(ctypes.c_long(nrs[0]), ctypes.c_int(0), ctypes.byref(want), ctypes.c_uint(0))
    if rc != 0:
        return None  # EINVAL, E2BIG, ENOSYS, EPERM: the old slice stays
    # Before 6.12 the call succeeds and sched_runtime reads back 0 for a fair task.
    got = current_slice_ns()
    return us if got == want.sched_runtime else None
