"""The I/O shell of the control socket, and the one-daemon-per-namespace lock.

`ControlServer` is a Unix stream socket served from the daemon's own poll
loop, with no thread: every socket is non-blocking, a request is one line of
at most `control.MAX_REQUEST` octets, a connection lives at most `DEADLINE`
seconds, at most `MAX_CLIENTS` are served at once (more are closed on
accept), and an answer is written as far as the client's socket takes it; a
client that does not read its answer before the deadline is dropped. So a
slow or hostile client costs the loop a few system calls, never a wait. What
a request means is `control`'s business (sans I/O).

`claim_namespace` binds an abstract Unix socket. Abstract names belong to the
network namespace of the socket (unix_net() in net/unix/af_unix.c), so a
second daemon in the same namespace gets EADDRINUSE, and asks the first for
its PID with SO_PEERCRED (the credentials the listener had at listen(2)).
The name is released by the kernel when the process dies, however it dies:
no stale lock file after SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import control
from .errors import RarpReplayError

RUN_DIR = "/run/rarp-replay"  # systemd's RuntimeDirectory=rarp-replay
DEFAULT_NAME = "rarp-reply"
# Abstract socket name: one per network namespace (see the module docstring).
LOCK_NAME = b"\0rarp-replay"
# A connection's whole life (request in, answer out); a client that sends nothing
# or does not read is closed after this.
DEADLINE = 2.0
MAX_CLIENTS = 16
SOCKET_MODE = 0o660  # the daemon's user and group
DIR_MODE = 0o750

_NS_PREFIX = "netns-"


class AlreadyRunningError(RarpReplayError):
    """Another rarp-reply serves this network namespace."""


# -- where the socket is ---------------------------------------------------------


def _netns_name_of(st: os.stat_result) -> str | None:
    """The `ip netns` name whose bind mount is the namespace `st` (None: none)."""
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        return None
    for name in names:
        with contextlib.suppress(OSError):
            other = os.stat(os.path.join("/run/netns", name))
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return name
    return None


def current_netns_name() -> str | None:
    """The `ip netns` name of this process's network namespace (None: it has none)."""
    try:
        return _netns_name_of(os.stat("/proc/self/ns/net"))
    except OSError:
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)[:100]


def socket_path(netns: str | None = None, run_dir: str = RUN_DIR) -> str:
    """The control socket of the daemon serving `netns` (None: this process's namespace).

    - a name (`--netns NAME`, `ip netns add NAME`): RUN_DIR/NAME.sock;
    - a path (`--netns /proc/PID/ns/net`): RUN_DIR/netns-INODE.sock, the namespace's
      inode number (what `readlink /proc/PID/ns/net` shows as net:[INODE]) unless the
      namespace also has an `ip netns` name, which then wins;
    - no --netns: the namespace this process runs in; its `ip netns` name when it has
      one (so `ip netns exec NAME rarp-reply` and `rarp-reply --netns NAME` agree),
      else RUN_DIR/rarp-reply.sock (the host's namespace).
    """
    if netns is not None and "/" not in netns:
        return os.path.join(run_dir, f"{_safe(netns)}.sock")
    try:
        st = os.stat(netns if netns is not None else "/proc/self/ns/net")
    except OSError as exc:
        if netns is None:
            return os.path.join(run_dir, f"{DEFAULT_NAME}.sock")
        raise RarpReplayError(f"network namespace '{netns}' not found: {exc.strerror}") from None
    name = _netns_name_of(st)
    if name is not None:
        return os.path.join(run_dir, f"{_safe(name)}.sock")
    if netns is not None:
        return os.path.join(run_dir, f"{_NS_PREFIX}{st.st_ino}.sock")
    return os.path.join(run_dir, f"{DEFAULT_NAME}.sock")


# -- one daemon per namespace ----------------------------------------------------


def claim_namespace(name: bytes = LOCK_NAME) -> socket.socket:
    """Hold the namespace's abstract name; AlreadyRunningError naming the holder's PID."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(name)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        pid = holder_pid(name)
        who = f"PID {pid}" if pid else "a process whose PID is not visible here"
        raise AlreadyRunningError(
            f"another rarp-reply ({who}) already serves this network namespace"
        ) from None
    sock.listen(8)
    sock.setblocking(False)
    return sock


def holder_pid(name: bytes = LOCK_NAME) -> int:
    """The PID of the process listening on abstract `name` (0: unknown)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as c:
        c.settimeout(1.0)
        try:
            c.connect(name)
            creds = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return 0
    pid: int = struct.unpack("3i", creds)[0]
    return pid


def drain_lock(sock: socket.socket) -> None:
    """Accept and close what queued on the lock (second instances asking for the PID),
    so that the backlog never fills."""
    for _ in range(16):
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.close()


# -- the server ------------------------------------------------------------------


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytes = b""
    answered: bool = False


class ControlServer:
    """Serve control requests from the daemon's poll loop (see the module docstring)."""

    def __init__(
        self,
        path: str,
        answer: Callable[[bytes, float], dict[str, Any]],
        *,
        deadline: float = DEADLINE,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.path = path
        self._answer = answer
        self.deadline = deadline
        self.max_clients = max_clients
        self.clients: dict[int, _Client] = {}
        self._poller: select.poll | None = None
        self.stats = {"requests": 0, "refused": 0, "timeouts": 0, "errors": 0}
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            os.chmod(directory, DIR_MODE)  # makedirs' mode is filtered by the umask
        self._unlink_stale()
        self.sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            # The file is created by bind(2) with the mode the umask leaves: no
            # moment where it is more open than SOCKET_MODE.
            old = os.umask(0o777 & ~SOCKET_MODE)
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, SOCKET_MODE)
            self.sock.listen(64)  # queued until accepted; beyond max_clients, closed
        except BaseException:
            self.sock.close()
            raise
        self._inode = os.stat(path).st_ino

    def _unlink_stale(self) -> None:
        """A socket file left by a daemon that died is removed; one a live daemon
        answers on (another namespace's daemon given the same path) is not."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RarpReplayError(f"control socket {self.path}: exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # nobody listens: a leftover
                return
        raise RarpReplayError(f"control socket {self.path}: another daemon answers on it")

    def fileno(self) -> int:
        return self.sock.fileno()

    def attach(self, poller: select.poll) -> None:
        self._poller = poller
        poller.register(self.sock.fileno(), select.POLLIN)

    def owns(self, fd: int) -> bool:
        return fd == self.sock.fileno() or fd in self.clients

    def on_ready(self, fd: int, events: int, now: float) -> None:
        if fd == self.sock.fileno():
            self._accept(now)
            return
        c = self.clients.get(fd)
        if c is None:
            return
        if events & (select.POLLERR | select.POLLNVAL):
            self._drop(c)
        elif events & select.POLLOUT or c.answered:
            self._write(c)
        elif events & (select.POLLIN | select.POLLHUP):
            self._read(c, now)

    def _accept(self, now: float) -> None:
        for _ in range(self.max_clients):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.stats["errors"] += 1
                return
            if len(self.clients) >= self.max_clients:
                self.stats["refused"] += 1
                conn.close()
                continue
            conn.setblocking(False)
            c = _Client(conn, now + self.deadline)
            self.clients[conn.fileno()] = c
            if self._poller is not None:
                self._poller.register(conn.fileno(), select.POLLIN)

    def _read(self, c: _Client, now: float) -> None:
        try:
            data = c.sock.recv(control.MAX_REQUEST + 1 - len(c.inbox))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        c.inbox += data
        end = c.inbox.find(b"\n")
        if end < 0 and data and len(c.inbox) <= control.MAX_REQUEST:
            return  # the rest of the line is still to come
        if end < 0 and not c.inbox:
            self._drop(c)  # closed without a word
            return
        line = bytes(c.inbox[: end if end >= 0 else len(c.inbox)])
        if end < 0 and len(c.inbox) > control.MAX_REQUEST:
            doc: dict[str, Any] = {"error": f"request longer than {control.MAX_REQUEST} octets"}
        else:
            try:
                doc = self._answer(line, now)
            except Exception as exc:  # a bug in a handler must not stop the daemon
                self.stats["errors"] += 1
                doc = {"error": f"internal error: {type(exc).__name__}: {exc}"}
        self.stats["requests"] += 1
        c.outbox = control.encode(doc)
        c.answered = True
        with contextlib.suppress(OSError):
            c.sock.shutdown(socket.SHUT_RD)
        self._write(c)

    def _write(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(c)
            return
        c.outbox = c.outbox[sent:]
        if not c.outbox:
            self._drop(c)
        elif self._poller is not None:
            self._poller.modify(c.sock.fileno(), select.POLLOUT)

    def expire(self, now: float) -> None:
        """Close connections past their deadline (silent, or not reading their answer)."""
        for c in [c for c in self.clients.values() if now >= c.deadline]:
            self.stats["timeouts"] += 1
            self._drop(c)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.clients.values()), default=None)

    def _drop(self, c: _Client) -> None:
        fd = c.sock.fileno()
        self.clients.pop(fd, None)
        if self._poller is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
        c.sock.close()

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._drop(c)
        with contextlib.suppress(OSError):
            # Only our own file: a daemon started later may have replaced it.
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        self.sock.close()


# -- the client ------------------------------------------------------------------


def request(path: str, line: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request, return the decoded answer. OSError when nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode("ascii") + b"\n")
        chunks = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            data = s.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
    doc: dict[str, Any] = json.loads(b"".join(chunks))
    return doc
