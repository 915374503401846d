"""Network-namespace test harness.

Builds namespaces, veth pairs and Linux bridges with names unique to the test
run, and always tears them down: on success, failure, Ctrl-C (pytest runs
fixture finalizers on KeyboardInterrupt) and SIGTERM (turned into SystemExit
below). Every interface lives inside a namespace this module created, so
deleting the namespace deletes the interfaces; nothing outside is touched.

Sockets can be opened *inside* a namespace from the test process itself
(`Netns.socket`): setns(2) on the calling thread, create the socket, switch
back. A socket keeps the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_SOCKET = 1
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.RLock()  # re-entrant: entered() may nest

# One id per test run (per process): every namespace name carries it.
RUN_ID = f"{os.getpid() % 100000:05d}{secrets.token_hex(2)}"

_live_labs: list[Lab] = []

ROOT = Path(__file__).resolve().parents[2]  # the project root

T = TypeVar("T")

# Every bounded wait below (and in daemon_proc, fabric) lasts `timeout * TIME_SCALE`.
# 1 on real hardware; tests/vm/runner.py raises it in QEMU guests without KVM, where the CPU
# is emulated (TCG) and everything, FRR's convergence included, runs several times slower.
TIME_SCALE = float(os.environ.get("RARP_REPLAY_TIME_SCALE", "1"))


def deadline(timeout: float) -> float:
    """The monotonic time at which a wait of `timeout` seconds gives up."""
    return time.monotonic() + timeout * TIME_SCALE


def have_root() -> bool:
    return os.geteuid() == 0


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns_name: str) -> Iterator[None]:
    """Run the body with the calling thread in namespace `ns_name`.

    Serialised by a lock: only sockets opened inside the body are affected.
    """
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns_name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)


def run(args: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout}{proc.stderr}"
        )
    return proc


def run_module(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m module args` from the project root, where `tests` and `benchmarks` import as
    packages (how the benchmarks and the atheris target run); the exit status is the caller's
    to check."""
    return run([sys.executable, "-m", module, *args], check=False, timeout=timeout, cwd=ROOT)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    end = deadline(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Netns:
    name: str
    lab: Lab

    def run(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return run(["ip", "netns", "exec", self.name, *args], check=check, **kw)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str | int) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], text=True, **kw)
        self.lab.processes.append(proc)
        return proc

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        with entered(self.name):
            return socket.socket(family, type_, proto)

    def ifindex(self, ifname: str) -> int:
        with entered(self.name):
            return socket.if_nametoindex(ifname)

    def mac(self, ifname: str) -> bytes:
        out = self.run("cat", f"/sys/class/net/{ifname}/address").stdout.strip()
        return bytes.fromhex(out.replace(":", ""))

    def link_up(self, *ifnames: str) -> None:
        for ifname in ifnames:
            self.ip("link", "set", ifname, "up")

    def bridge(self, name: str, *ports: str, mac: str | None = None) -> None:
        """A traditional (non VLAN-filtering) bridge, multicast snooping off, STP off."""
        args = ["link", "add", name]
        if mac:
            args += ["address", mac]
        self.ip(
            *args, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"
        )
        for port in ports:
            self.ip("link", "set", port, "master", name)
        self.link_up(name, *ports)

    def remote_neighbor(self, ip: str, mac: str, dev: str = "br100") -> None:
        """A binding as EVPN installs it for a host behind another VTEP (FRR's zebra)."""
        self.ip(
            "neigh", "replace", ip, "lladdr", mac, "dev", dev,
            "nud", "noarp", "extern_learn", "proto", "zebra",
        )  # fmt: skip

    def capture(self, ifname: str, predicate: Callable[[bytes], bool] | None = None) -> Capture:
        cap = Capture(self, ifname, predicate)
        self.lab.captures.append(cap)
        return cap


def mac_of(kind: int, i: int) -> bytes:
    """The `i`-th of a family of MACs: 02:<kind>:<i as 4 octets>, locally administered unicast
    (IEEE 802: bit 1 of the first octet set, bit 0 clear), so it is never a real NIC's."""
    return bytes([0x02, kind]) + i.to_bytes(4, "big")


def access_switch(
    lab: Lab, vm_mac: str, svi_mac: str, vm_addrs: Sequence[str], svi_addrs: Sequence[str]
) -> tuple[Netns, Netns]:
    """The smallest leaf: namespace `sw` with bridge br100 (the SVI, `svi_addrs`) and its
    port swp1, a veth to namespace `vm` (eth0, `vm_mac`, `vm_addrs`). Addresses carry
    their prefix length; IPv6 ones are added without DAD, so they are usable at once."""
    sw, vm = lab.netns("sw"), lab.netns("vm")
    lab.veth(vm, "eth0", sw, "swp1")
    vm.ip("link", "set", "eth0", "address", vm_mac)
    sw.bridge("br100", "swp1", mac=svi_mac)
    for ns, dev, addrs in ((vm, "eth0", vm_addrs), (sw, "br100", svi_addrs)):
        for addr in addrs:
            extra = ("nodad",) if ":" in addr else ()
            ns.ip("addr", "add", addr, "dev", dev, *extra)
    return sw, vm


class Lab:
    """Owns every namespace (and process, capture) a test creates; `close()` removes them."""

    def __init__(self, tag: str = "") -> None:
        self.prefix = f"rrt{RUN_ID}{tag}"
        self.namespaces: list[Netns] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.captures: list[Capture] = []
        _live_labs.append(self)

    def netns(self, role: str) -> Netns:
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        ns = Netns(name, self)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        # Quiet, deterministic namespaces: no IPv6 DAD delay, no router solicitations.
        ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
        ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        ns.sysctl("net.ipv6.conf.default.router_solicitations", 0)
        return ns

    def veth(self, a: Netns, a_name: str, b: Netns, b_name: str, up: bool = True) -> None:
        """A veth pair with one end in each namespace (created directly there)."""
        a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
        if up:
            a.link_up(a_name)
            b.link_up(b_name)

    def close(self) -> None:
        for cap in self.captures:
            cap.close()
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for ns in reversed(self.namespaces):
            # Kill anything still running inside (FRR daemons, helpers) before deletion.
            pids = run(["ip", "netns", "pids", ns.name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()
        if self in _live_labs:
            _live_labs.remove(self)


def close_all_labs() -> None:
    for lab in list(_live_labs):
        lab.close()


class Reader(Generic[T]):
    """A socket read by one background thread into `items`, for tests to wait on.

    Subclasses say what one read yields (`read`: zero or more items); this class owns the
    thread, the lock and the bounded waits, so a test never sleeps blindly. A subclass sets
    its own attributes before calling `__init__`, which starts the thread.
    """

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.items: list[T] = []
        self._where = where
        self._cond = threading.Condition()
        self._sock = sock
        self._sock.settimeout(0.1)  # how often the thread looks at `_stop`
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"reader {where}")
        self._thread.start()

    def read(self, sock: socket.socket) -> list[T]:
        """One blocking read of `sock` (at most the timeout): the items it yields."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop:
            try:
                got = self.read(self._sock)
            except TimeoutError:
                continue
            except OSError as exc:
                # A packet socket bound while its device was down: the kernel queues ENETDOWN
                # once (packet_do_bind) and re-registers the socket when the device comes up
                # (packet_notifier): keep reading.
                if exc.errno == errno.ENETDOWN and not self._stop:
                    continue
                return
            if got:
                with self._cond:
                    self.items.extend(got)
                    self._cond.notify_all()

    def wait_for(
        self, count: int = 1, timeout: float = 5.0, match: Callable[[T], bool] | None = None
    ) -> list[T]:
        """Wait until at least `count` matching items were read; return them."""
        end = deadline(timeout)
        with self._cond:
            while True:
                got = [x for x in self.items if match is None or match(x)]
                if len(got) >= count:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"captured {len(got)} of {count} expected items on {self._where} "
                        f"in {timeout}s"
                    )
                self._cond.wait(left)

    def matching(self, match: Callable[[T], bool] | None = None) -> list[T]:
        with self._cond:
            return [x for x in self.items if match is None or match(x)]

    def clear(self) -> None:
        with self._cond:
            self.items.clear()

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=1)
        self._sock.close()


@dataclass
class Frame:
    data: bytes
    timestamp: float  # kernel receive (or transmit, for outgoing) time, SO_TIMESTAMPNS
    outgoing: bool
    ifname: str
    vlan: int | None = None  # VLAN id the kernel moved from the frame into PACKET_AUXDATA


class Capture(Reader[Frame]):
    """All frames crossing `ifname` in `ns` (both directions), kernel-timestamped, those
    `predicate` keeps (all when None)."""

    def __init__(
        self, ns: Netns, ifname: str, predicate: Callable[[bytes], bool] | None = None
    ) -> None:
        self.ns, self.ifname, self.predicate = ns, ifname, predicate
        sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((ifname, ETH_P_ALL))
        super().__init__(sock, f"{ns.name}/{ifname}")

    def read(self, sock: socket.socket) -> list[Frame]:
        data, anc, _flags, addr = sock.recvmsg(65535, 256)
        if self.predicate is not None and not self.predicate(data):
            return []
        ts = time.time()
        vlan = None
        for level, kind, payload in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= 20:
                status = int.from_bytes(payload[0:4], "little")
                if status & TP_STATUS_VLAN_VALID:
                    vlan = int.from_bytes(payload[16:18], "little") & 0x0FFF
            if level == SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = (
                    int.from_bytes(payload[:8], "little"),
                    int.from_bytes(payload[8:16], "little"),
                )
                ts = sec + nsec / 1e9
        return [Frame(data, ts, addr[2] == PACKET_OUTGOING, addr[0], vlan)]


def _sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so fixture finalizers (and close_all_labs) run.
    raise SystemExit(128 + signum)


def install_signal_cleanup() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
