"""Enter a named network namespace (`--netns`) before any socket is opened.

A socket belongs to the network namespace its creator was in when it was
created (sock_net()), so after setns(2) every socket this process opens (the
packet sockets, the rtnetlink sockets, the ioctl sockets that resolve
interface names) serves that namespace. The daemon reads nothing from /sys or
/proc/net, so unlike `ip netns exec` it needs no private mount namespace with
/sys remounted: netlink and the sockets are all it uses.

setns(2) needs CAP_SYS_ADMIN (in the namespace's owning user namespace and in
the caller's), which the daemon drops once its sockets are open (see
`capabilities.drop_to`). It moves only the calling thread, so it is called
while the process has just one.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .errors import CapabilityError, NetnsError, NetnsNotFoundError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add NAME` bind-mounts the namespace

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def path_of(name: str) -> str:
    """/run/netns/NAME for a name as `ip netns add` takes it; a path is used as it is.

    A name is what ip-netns(8) accepts: not empty, no '/', not '.' or '..'.
    Anything with a '/' is a path (e.g. /proc/PID/ns/net).
    """
    if not name or "\0" in name:
        raise ValueError(f"invalid network namespace name: {name!r}")
    if "/" in name:
        return name
    if name in (".", ".."):
        raise ValueError(f"invalid network namespace name: {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def enter(name: str) -> str:
    """Move the calling thread into network namespace `name`; returns the path used."""
    try:
        path = path_of(name)
    except ValueError as exc:
        raise NetnsError(str(exc)) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFoundError(f"network namespace '{name}' not found") from None
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace '{name}': {exc.strerror}") from None
    try:
        # nstype CLONE_NEWNET, not 0: the kernel refuses (EINVAL) an fd of
        # another kind, such as a plain file or a /run/netns entry whose mount
        # is gone; and systemd's RestrictNamespaces=net lets setns(2) through
        # only with a namespace type it allows (never with 0).
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise CapabilityError(
                    "CAP_SYS_ADMIN",
                    f"missing capability CAP_SYS_ADMIN to enter network namespace '{name}'",
                )
            if err == errno.EINVAL:
                where = "" if path == name else f" ({path})"
                raise NetnsError(f"'{name}' is not a network namespace{where}")
            raise NetnsError(f"cannot enter network namespace '{name}': {os.strerror(err)}")
    finally:
        os.close(fd)
    return path
