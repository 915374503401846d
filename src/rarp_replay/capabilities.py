"""Linux capabilities of this process: read them, and drop what is not needed.

capabilities(7): a thread has five sets. *Effective* is what the kernel checks,
*permitted* bounds what may be made effective, *inheritable* and *ambient*
carry capabilities across execve(2), and the *bounding* set caps what any
later execve(2) (of a set-user-ID-root program, or one with file
capabilities) can ever grant.

`drop_to()` is called by the daemon once every socket is open: entering a
network namespace (CAP_SYS_ADMIN), SO_RCVBUFFORCE beyond net.core.rmem_max
(CAP_NET_ADMIN) and binding ports below 1024 (CAP_NET_BIND_SERVICE) are all
done by then. After it, the process holds only the capabilities it asked to
keep, in effective and permitted; inheritable and ambient are empty; the
bounding set holds only the kept ones (when the process may change it, i.e.
holds CAP_SETPCAP); and no_new_privs is set, so no execve(2) can ever grant
more than the permitted set (security/commoncap.c intersects the new
permitted set with the old one under no_new_privs). The parts that decide
(`Caps.parse`, `plan`, `verify`) are pure; the system calls are thin.

Every one of these sets is per *thread* (capset(2) and prctl(2) act on the
calling thread only), so the drop refuses to run while more than one thread
exists: a thread started earlier would keep everything.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import PrivilegeDropError

CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21

# linux/capability.h, in bit order; newer kernels may have more (named cap_N).
_ORDER = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
NAMES = dict(enumerate(_ORDER))

# The 64-bit capability sets of _LINUX_CAPABILITY_VERSION_3 (two 32-bit words).
_MAX_CAPS = 64

# prctl(2) options (linux/prctl.h).
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def name(cap: int) -> str:
    return NAMES.get(cap, f"cap_{cap}")


def mask(caps: Iterable[int]) -> int:
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def bits(m: int) -> list[int]:
    return [c for c in range(_MAX_CAPS) if m >> c & 1]


def names(m: int) -> list[str]:
    return [name(c) for c in bits(m)]


@dataclass(frozen=True)
class Caps:
    """A thread's capability sets as bit masks, and the two facts the drop depends on."""

    inheritable: int = 0
    permitted: int = 0
    effective: int = 0
    bounding: int = 0
    ambient: int = 0
    no_new_privs: bool = False
    threads: int = 1

    @classmethod
    def parse(cls, status: str) -> Caps:
        """From the text of /proc/<pid>/status (CapInh, CapPrm, CapEff, CapBnd, CapAmb...)."""
        fields: dict[str, str] = {}
        for line in status.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()

        def hexmask(key: str) -> int:
            return int(fields.get(key, "0"), 16)

        return cls(
            inheritable=hexmask("CapInh"),
            permitted=hexmask("CapPrm"),
            effective=hexmask("CapEff"),
            bounding=hexmask("CapBnd"),
            ambient=hexmask("CapAmb"),
            no_new_privs=fields.get("NoNewPrivs", "0") == "1",
            threads=int(fields.get("Threads", "1")),
        )


@dataclass(frozen=True)
class Plan:
    """What `drop_to` will set, computed from the current sets and the ones to keep."""

    effective: int
    permitted: int
    bounding: int  # the bounding set afterwards
    bounding_drop: int  # to remove from it (PR_CAPBSET_DROP, one by one)
    bounding_kept: int  # bits beyond `keep` that must stay: no CAP_SETPCAP to drop them
    raise_setpcap: bool  # CAP_SETPCAP is permitted but not effective: make it so first


def plan(current: Caps, keep: int) -> Plan:
    """The target sets for keeping `keep` (a mask).

    Effective and permitted become `keep` as far as it is permitted now (a
    capability cannot be gained). Inheritable and ambient become empty: the
    daemon executes nothing, and an empty inheritable set also means no
    ambient capability can be raised again (PR_CAP_AMBIENT_RAISE needs it in
    both permitted and inheritable). Removing a bounding bit needs CAP_SETPCAP
    in the effective set (prctl(2) PR_CAPBSET_DROP); without it, what is
    there stays, and no_new_privs keeps execve(2) from using it.
    """
    target = keep & current.permitted
    extra = current.bounding & ~keep
    can_drop = bool(current.permitted >> CAP_SETPCAP & 1)
    return Plan(
        effective=target,
        permitted=target,
        bounding=current.bounding & keep if can_drop else current.bounding,
        bounding_drop=extra if can_drop else 0,
        bounding_kept=0 if can_drop else extra,
        raise_setpcap=bool(extra) and can_drop and not current.effective >> CAP_SETPCAP & 1,
    )


def verify(after: Caps, want: Plan) -> list[str]:
    """What differs between the sets after the drop and the plan ([] if nothing)."""
    problems = []
    for label, got, exp in (
        ("effective", after.effective, want.effective),
        ("permitted", after.permitted, want.permitted),
        ("inheritable", after.inheritable, 0),
        ("ambient", after.ambient, 0),
        ("bounding", after.bounding, want.bounding),
    ):
        if got != exp:
            extra, lacking = names(got & ~exp), names(exp & ~got)
            problems.append(f"{label} set has {extra or 'none'} extra, {lacking or 'none'} missing")
    if not after.no_new_privs:
        problems.append("no_new_privs is not set")
    return problems


@dataclass(frozen=True)
class Result:
    before: Caps
    after: Caps
    plan: Plan

    @property
    def kept(self) -> list[str]:
        return names(self.after.permitted)

    @property
    def dropped(self) -> list[str]:
        """Capabilities that were permitted before and are not now."""
        return names(self.before.permitted & ~self.after.permitted)

    @property
    def bounding_left(self) -> list[str]:
        """Bounding bits beyond the kept ones that could not be removed (no CAP_SETPCAP)."""
        return names(self.plan.bounding_kept)


# --- system calls ---------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
_libc.prctl.restype = ctypes.c_int


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    rc = int(_libc.prctl(option, arg2, arg3, 0, 0))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)  # pid 0: the calling thread
    data = (_CapData * 2)()
    for word in range(2):
        shift = 32 * word
        data[word].effective = effective >> shift & 0xFFFFFFFF
        data[word].permitted = permitted >> shift & 0xFFFFFFFF
        data[word].inheritable = inheritable >> shift & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def current() -> Caps:
    """This thread's sets. /proc/thread-self: capabilities are per thread."""
    with open("/proc/thread-self/status", encoding="ascii") as f:
        caps = Caps.parse(f.read())
    with open("/proc/self/status", encoding="ascii") as f:
        threads = Caps.parse(f.read()).threads
    return Caps(
        caps.inheritable,
        caps.permitted,
        caps.effective,
        caps.bounding,
        caps.ambient,
        caps.no_new_privs,
        threads,
    )


def effective() -> int:
    """The effective capability set (CapEff) as a bit mask."""
    return current().effective


def missing(*caps: int) -> list[str]:
    eff = effective()
    return [name(c) for c in caps if not eff & (1 << c)]


def drop_to(keep: Iterable[int]) -> Result:
    """Keep only `keep` (effective, permitted, bounding); empty inheritable and ambient.

    Raises PrivilegeDropError if a step fails or the result is not exactly the
    plan: a daemon that believes it dropped privileges and did not is worse
    than one that does not start.
    """
    before = current()
    if before.threads != 1:
        raise PrivilegeDropError(
            f"cannot drop capabilities: {before.threads} threads are running, and "
            "capset(2) changes only the calling thread"
        )
    want = plan(before, mask(keep))
    step = "no_new_privs"
    try:
        # First, and needs no privilege: from here on execve(2) cannot grant
        # anything beyond the permitted set, whatever the bounding set holds.
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if want.raise_setpcap:
            step = "capset (raise CAP_SETPCAP)"
            _capset(before.effective | 1 << CAP_SETPCAP, before.permitted, before.inheritable)
        # The bounding set before capset(): PR_CAPBSET_DROP needs CAP_SETPCAP effective.
        for cap in bits(want.bounding_drop):
            step = f"PR_CAPBSET_DROP {name(cap)}"
            _prctl(PR_CAPBSET_DROP, cap)
        step = "PR_CAP_AMBIENT_CLEAR_ALL"
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        step = "capset"
        _capset(want.effective, want.permitted, 0)
    except OSError as exc:
        raise PrivilegeDropError(
            f"cannot drop capabilities: {step}: {os.strerror(exc.errno or _errno.EIO)}"
        ) from exc
    after = current()
    problems = verify(after, want)
    if problems:
        raise PrivilegeDropError("capabilities not dropped as planned: " + "; ".join(problems))
    return Result(before, after, want)
