"""Shared set-up for the reliability tests: a switch, hosts on its ports, probes on the wire,
and the daemon's resources read from /proc.

Topology (namespaces made by `netlab`, removed by the `lab` fixture):

    h1(eth0) ==veth== (swp1) sw:br100 (swp2) ==veth== h2(eth0)   ...more ports on demand
                             SVI 198.18.0.1/15, 2001:db8:b1::1/64, MAC 02:b1:00:00:00:01

198.18.0.0/15 is the benchmarking range (RFC 2544) and 2001:db8::/32 the documentation
prefix: nothing here can be mistaken for a real destination, and all of it stays inside the
namespaces anyway. Bindings are installed as EVPN installs remote entries (`nud noarp
extern_learn proto zebra`), in one `ip -batch` for thousands at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rarp_replay.frames.arp import rarp_request
from rarp_replay.frames.ethernet import ETH_P_ARP, ETH_P_IPV6, ETH_P_RARP, EthernetFrame
from rarp_replay.macaddr import BROADCAST, format_mac
from rarp_replay.packetsock import attach_filter
from tests.support import netlab

SVI = "br100"
SVI_MAC = bytes.fromhex("02b100000001")
SVI_V4 = "198.18.0.1/15"
SVI_V6 = "2001:db8:b1::1/64"
BASE_V4 = int(ipaddress.IPv4Address("198.18.1.0"))
BASE_V6 = int(ipaddress.IPv6Address("2001:db8:b1::1:0"))
NEIGH_PROTOCOL = 82  # engine.Config.neigh_protocol: the daemon's own entries


# cBPF: A = EtherType; accept ARP or IPv6 (first 128 octets: headers suffice), drop the rest.
_ARP_OR_IPV6 = [
    (0x28, 0, 0, 12),  # ldh [12]
    (0x15, 1, 0, ETH_P_ARP),  # jeq ARP -> accept
    (0x15, 0, 1, ETH_P_IPV6),  # jeq IPv6 -> accept, else drop
    (0x06, 0, 0, 128),  # ret 128
    (0x06, 0, 0, 0),  # ret 0
]


def v4(i: int) -> str:
    return str(ipaddress.IPv4Address(BASE_V4 + i))


def v6(i: int) -> str:
    return str(ipaddress.IPv6Address(BASE_V6 + i))


@dataclass
class Switch:
    lab: netlab.Lab
    sw: netlab.Netns
    hosts: dict[str, netlab.Netns] = field(default_factory=dict)

    @classmethod
    def build(cls, lab: netlab.Lab, ports: int = 2) -> Switch:
        sw = lab.netns("sw")
        sw.bridge(SVI, mac=format_mac(SVI_MAC))
        sw.ip("addr", "add", SVI_V4, "dev", SVI)
        sw.ip("-6", "addr", "add", SVI_V6, "dev", SVI, "nodad")
        s = cls(lab, sw)
        for n in range(1, ports + 1):
            s.add_host(f"h{n}", f"swp{n}")
        return s

    def add_host(self, name: str, port: str) -> netlab.Netns:
        h = self.lab.netns(name)
        # A silent host: no IPv6 chatter (MLD, RS) that would move MACs or add noise.
        h.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        h.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        self.lab.veth(h, "eth0", self.sw, port, up=False)
        self.sw.ip("link", "set", port, "master", SVI)
        self.sw.link_up(port)
        h.link_up("eth0")
        self.hosts[name] = h
        return h

    def batch(self, lines: Iterable[str]) -> None:
        """`ip -batch` in the switch namespace: thousands of changes in one process."""
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            self.sw.ip("-batch", f.name)

    @staticmethod
    def remote_line(ip: str, mac: bytes, op: str = "replace") -> str:
        return (
            f"neigh {op} {ip} lladdr {format_mac(mac)} dev {SVI} nud noarp extern_learn proto zebra"
        )

    def neighbors(self) -> list[str]:
        """`ip -d neigh` lines of the SVI (with `proto` when the entry carries one)."""
        out = self.sw.ip("-d", "neigh", "show", "dev", SVI).stdout
        return [line for line in out.splitlines() if line.strip()]

    def ours(self) -> list[str]:
        """Entries that carry the daemon's NDA_PROTOCOL."""
        return [line for line in self.neighbors() if f"proto {NEIGH_PROTOCOL}" in line]


def rarp_from(src: bytes, mac: bytes) -> bytes:
    """A RARP request for `mac` sent by a host whose own MAC is `src`: the bridge learns
    `src` only, so asking about thousands of MACs makes no FDB churn."""
    return EthernetFrame(BROADCAST, src, ETH_P_RARP, rarp_request(mac).build()).build()


def rarp_sender(ns: netlab.Netns, ifname: str = "eth0") -> socket.socket:
    s = ns.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    return s


def is_probe(data: bytes, mac: bytes | None = None) -> bool:
    """An ARP request or Neighbor Solicitation from the SVI, unicast to `mac` (any MAC if None)."""
    if data[6:12] != SVI_MAC or data[0] & 1:
        return False
    if mac is not None and data[0:6] != mac:
        return False
    if data[12:14] == b"\x08\x06":
        return data[20:22] == b"\x00\x01"
    # IPv6, next header ICMPv6 (58), type 135
    return data[12:14] == b"\x86\xdd" and data[20] == 58 and data[54] == 135


def arp_target(data: bytes) -> str:
    return str(ipaddress.IPv4Address(data[38:42]))


class Tap(netlab.Reader[bytes]):
    """ARP and IPv6 frames crossing `ifname` in `ns`, kept by `keep`, read by a thread.

    ETH_P_ALL (a socket bound to one EtherType never sees outgoing frames: the kernel hands
    those only to ETH_P_ALL taps, dev_queue_xmit_nit), with a cBPF filter that passes ARP and
    IPv6 only, so the RARP flood stays in the kernel and a Python reader keeps up.
    """

    def __init__(self, ns: netlab.Netns, ifname: str, keep: Callable[[bytes, int], bool]) -> None:
        self._keep = keep
        # Protocol 0 until bind(): nothing is queued before the filter is in place.
        sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        attach_filter(sock, _ARP_OR_IPV6)
        sock.bind((ifname, netlab.ETH_P_ALL))
        super().__init__(sock, f"{ns.name}/{ifname}")

    def read(self, sock: socket.socket) -> list[bytes]:
        data, addr = sock.recvfrom(2048)
        return [data] if self._keep(data, addr[2]) else []


def probe_tap(ns: netlab.Netns, ifname: str, *, outgoing: bool) -> Tap:
    """Probes crossing `ifname`: sent through it (outgoing) or received on it."""

    def keep(data: bytes, pkttype: int) -> bool:
        return (pkttype == netlab.PACKET_OUTGOING) == outgoing and is_probe(data)

    return Tap(ns, ifname, keep)


# -- the daemon's resources, from /proc ----------------------------------------------------


def status_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """VmRSS of `pid` every `interval` seconds, in a thread, until `stop()`."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.samples.append(status_kib(self.pid))
            self._stop.wait(self._interval)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.samples
