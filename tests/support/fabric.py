"""A two-leaf EVPN-VXLAN fabric (FRR) in network namespaces, for migration experiments.

Topology (every box is a namespace of one `netlab.Lab`)::

         leaf1 ---- underlay veth (198.51.100.0/31) ---- leaf2
     lo 203.0.113.1                                  lo 203.0.113.2 (VTEPs)
     br100: vxlan100 + "hv" port                     br100: vxlan100 + "hv" port
       |                                               |
      hv1: hvbr ("uplink" + "vmtap")                  hv2: hvbr ("uplink")
       |
      vm: eth0 52:54:00:aa:00:01, 192.0.2.10/24 (2001:db8:100::10/64)

`migrate()` moves "vmtap" (the VM's veth peer) from hv1 to hv2, which is what
a live migration looks like to the network: the VM itself says nothing, only
the destination hypervisor's RARP burst (`send_rarps()`) announces it.

With ``vm_behind_hypervisor=False`` the hypervisor namespaces are still built
but "vmtap" is a port of leaf1's br100 directly and moves to leaf2's br100.

Observation points, all timestamped with wall-clock time (time.time()) so
they compare with capture timestamps:
  * `NeighMonitor`: rtnetlink neighbour/fdb events of a leaf (what zebra
    installs and deletes, what the kernel learns);
  * `BgpWatch`: EVPN type-2 UPDATEs/withdrawals on the underlay link, decoded
    from a kernel-timestamped capture (who advertised what, when).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from rarp_replay.frames.arp import ArpOp, ArpPacket, rarp_request_frame
from rarp_replay.frames.ethernet import ETH_P_ARP, EthernetFrame
from rarp_replay.frames.ipv6 import internet_checksum, multicast_mac
from rarp_replay.frames.ipv6 import solicited_node as solicited_node_of
from rarp_replay.frames.ndp import ns_frame as build_ns_frame
from rarp_replay.macaddr import BROADCAST, format_mac, parse_mac
from tests.support.daemon_proc import DaemonProc
from tests.support.netlab import Capture, Lab, Netns, Reader, run, wait_until

VM_MAC = "52:54:00:aa:00:01"
VM_IP4 = "192.0.2.10"
VM_IP6 = "2001:db8:100::10"
VNI = 100
# Distinct (not anycast) SVI addresses: a probe's source address then says
# which leaf sent it, and the VM's answer is addressed to that leaf's own MAC,
# so there is no doubt which kernel received it. Anycast would need the same
# MAC on both bridges, hiding exactly that.
SVI = {
    "leaf1": ("192.0.2.252", "2001:db8:100::252", "02:00:00:00:01:64"),
    "leaf2": ("192.0.2.253", "2001:db8:100::253", "02:00:00:00:02:64"),
}
VTEP = {"leaf1": "203.0.113.1", "leaf2": "203.0.113.2"}
UNDERLAY = {"leaf1": "198.51.100.0", "leaf2": "198.51.100.1"}
OTHER = {"leaf1": "leaf2", "leaf2": "leaf1"}

# QEMU's announce_self defaults: 5 rounds, 50 ms initial, +100 ms per round.
QEMU_RARP_OFFSETS = (0.0, 0.05, 0.2, 0.45, 0.8)

FRR_DIR = Path("/usr/lib/frr")

# rtnetlink constants (linux/neighbour.h, linux/rtnetlink.h)
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
RTMGRP_NEIGH = 0x4
NDA_DST, NDA_LLADDR, NDA_MASTER, NDA_PROTOCOL = 1, 2, 9, 12
NTF_USE, NTF_SELF, NTF_MASTER, NTF_EXT_LEARNED = 0x01, 0x02, 0x04, 0x10
NUD_NAMES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}
RTPROT_ZEBRA = 11


# Frames the lab sends by hand, built with the project's codecs (string-typed
# wrappers for the scenarios' convenience).


def rarp_frame(mac: str) -> bytes:
    """A QEMU-style RARP request (reverse request, target = sender = the VM's MAC)."""
    return rarp_request_frame(parse_mac(mac))


def _arp_request(src_mac: str, src_ip: str, dst_ip: str, eth_dst: bytes) -> bytes:
    # Target hardware address zero, as a resolving host sends it (RFC 826).
    src = parse_mac(src_mac)
    pkt = ArpPacket(
        ArpOp.REQUEST, src, IPv4Address(src_ip).packed, bytes(6), IPv4Address(dst_ip).packed
    )
    return EthernetFrame(eth_dst, src, ETH_P_ARP, pkt.build()).build()


def arp_request_frame(src_mac: str, src_ip: str, dst_ip: str, dst_mac: str | None = None) -> bytes:
    """An ARP request; unicast to `dst_mac` when given (the original design's probe)."""
    return _arp_request(src_mac, src_ip, dst_ip, parse_mac(dst_mac) if dst_mac else BROADCAST)


def ns_frame(
    src_mac: str,
    src_ip: str,
    target_ip: str,
    dst_mac: str | None = None,
    *,
    solicited_node: bool | None = None,
) -> bytes:
    """An IPv6 Neighbour Solicitation with a source link-layer address option.

    The Ethernet destination is `dst_mac` (unicast) or, when None, the
    solicited-node group's 33:33:ff:.. MAC. The IPv6 destination is the
    solicited-node group when `solicited_node` (default: when `dst_mac` is
    None), else the target itself like a NUD probe. It matters: Linux answers
    a NS sent to a unicast IPv6 address with a NA *without* the target
    link-layer address option, and such a NA cannot complete an INCOMPLETE
    entry nor create one (accept_untracked_na); a unicast frame to the
    solicited-node address still reaches only the VM and gets the option.
    """
    target = IPv6Address(target_ip)
    group = solicited_node_of(target)
    if solicited_node is None:
        solicited_node = dst_mac is None
    eth_dst = parse_mac(dst_mac) if dst_mac else multicast_mac(group)
    return build_ns_frame(
        parse_mac(src_mac),
        eth_dst,
        IPv6Address(src_ip),
        group if solicited_node else target,
        target,
    )


def gratuitous_arp_frame(mac: str, ip: str) -> bytes:
    """A broadcast gratuitous ARP request (sender IP = target IP), as a guest sends on link-up."""
    return _arp_request(mac, ip, ip, BROADCAST)


def udp_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, *, dport: int = 9, payload: bytes = b"x"
) -> bytes:
    """One IPv4/UDP datagram (UDP checksum 0, which IPv4 allows) in an Ethernet frame."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
        socket.inet_aton(src_ip), socket.inet_aton(dst_ip),
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return (parse_mac(dst_mac) + parse_mac(src_mac) + b"\x08\x00" + ip + udp).ljust(60, b"\x00")


# --------------------------------------------------------------------------- netlink


@dataclass(frozen=True)
class NeighEvent:
    """One RTM_NEWNEIGH/RTM_DELNEIGH (an ARP/ND entry, or an fdb entry when family is bridge)."""

    time: float
    kind: str  # "new" or "del"
    family: int  # AF_INET, AF_INET6 or AF_BRIDGE (fdb)
    ifindex: int
    dst: str | None  # IP (neigh) or remote VTEP (fdb on a vxlan device)
    lladdr: str | None
    state: int
    flags: int
    protocol: int | None

    @property
    def states(self) -> str:
        return ",".join(n for bit, n in NUD_NAMES.items() if self.state & bit) or "NONE"

    @property
    def extern_learn(self) -> bool:
        return bool(self.flags & NTF_EXT_LEARNED)

    @property
    def remote(self) -> bool:
        """Installed by zebra for a route from the other leaf (NOARP + extern_learn)."""
        return self.extern_learn and bool(self.state & 0x40)


def _parse_neigh(kind: str, payload: bytes, now: float) -> NeighEvent:
    family, _p1, _p2, ifindex, state, flags, _type = struct.unpack_from("=BBHiHBB", payload)
    attrs: dict[int, bytes] = {}
    off = 12
    while off + 4 <= len(payload):
        alen, atype = struct.unpack_from("=HH", payload, off)
        if alen < 4:
            break
        attrs[atype & 0x3FFF] = payload[off + 4 : off + alen]
        off += (alen + 3) & ~3
    dst = None
    if NDA_DST in attrs:
        raw = attrs[NDA_DST]
        dst = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    lladdr = format_mac(attrs[NDA_LLADDR]) if len(attrs.get(NDA_LLADDR, b"")) == 6 else None
    proto = attrs[NDA_PROTOCOL][0] if NDA_PROTOCOL in attrs else None
    return NeighEvent(now, kind, family, ifindex, dst, lladdr, state, flags, proto)


class NeighMonitor(Reader[NeighEvent]):
    """Background rtnetlink listener (RTMGRP_NEIGH) inside one namespace.

    Our own socket rather than `ip monitor`: events are stamped the moment the
    thread reads them (no pipe, no text parsing), and tests can block on a
    predicate instead of sleeping.
    """

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        sock = ns.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((0, RTMGRP_NEIGH))
        super().__init__(sock, f"{ns.name} rtnetlink")

    def read(self, sock: socket.socket) -> list[NeighEvent]:
        data = sock.recv(1 << 16)
        now = time.time()
        got = []
        off = 0
        while off + 16 <= len(data):
            mlen, mtype = struct.unpack_from("=IH", data, off)
            if mlen < 16:
                break
            if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                kind = "new" if mtype == RTM_NEWNEIGH else "del"
                got.append(_parse_neigh(kind, data[off + 16 : off + mlen], now))
            off += (mlen + 3) & ~3
        return got

    def first(
        self, match: Callable[[NeighEvent], bool], timeout: float = 5.0, since: float = 0.0
    ) -> NeighEvent:
        """First event at or after `since` satisfying `match`; AssertionError after `timeout`."""
        return self.wait_for(timeout=timeout, match=lambda e: e.time >= since and match(e))[0]


# --------------------------------------------------------------------------- BGP on the wire


@dataclass(frozen=True)
class EvpnUpdate:
    """One EVPN type-2 NLRI seen in a BGP UPDATE on the underlay link."""

    time: float
    sender: str  # underlay address of the speaker ("leaf1"/"leaf2" via `BgpWatch.leaf_of`)
    withdraw: bool
    mac: str
    ip: str | None
    seq: int | None  # MAC mobility sequence number (advertisements only)


def _parse_evpn_nlri(buf: bytes) -> list[tuple[str, str | None]]:
    out = []
    off = 0
    while off + 2 <= len(buf):
        rtype, rlen = buf[off], buf[off + 1]
        body = buf[off + 2 : off + 2 + rlen]
        off += 2 + rlen
        if rtype != 2 or len(body) < 23:
            continue
        # RD(8) ESI(10) ETag(4) maclen(1) mac(6) iplen(1) ip
        mac = format_mac(body[23:29])
        iplen = body[29]
        ip = None
        if iplen == 32:
            ip = socket.inet_ntop(socket.AF_INET, body[30:34])
        elif iplen == 128:
            ip = socket.inet_ntop(socket.AF_INET6, body[30:46])
        out.append((mac, ip))
    return out


def parse_bgp_update(
    msg: bytes,
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]], int | None]:
    """(advertised, withdrawn, mobility seq) EVPN type-2 NLRIs of one UPDATE message body."""
    wlen = struct.unpack_from("!H", msg, 0)[0]
    alen = struct.unpack_from("!H", msg, 2 + wlen)[0]
    off = 4 + wlen
    end = off + alen
    adv: list[tuple[str, str | None]] = []
    wd: list[tuple[str, str | None]] = []
    seq = None
    while off + 3 <= end:
        flags, code = msg[off], msg[off + 1]
        if flags & 0x10:
            length = struct.unpack_from("!H", msg, off + 2)[0]
            val = msg[off + 4 : off + 4 + length]
            off += 4 + length
        else:
            length = msg[off + 2]
            val = msg[off + 3 : off + 3 + length]
            off += 3 + length
        if code == 14 and val[:3] == b"\x00\x19\x46":  # MP_REACH, AFI 25 SAFI 70
            nhlen = val[3]
            adv += _parse_evpn_nlri(val[4 + nhlen + 1 :])
        elif code == 15 and val[:3] == b"\x00\x19\x46":  # MP_UNREACH
            wd += _parse_evpn_nlri(val[3:])
        elif code == 16:  # extended communities: MAC mobility is type 0x06 subtype 0x00
            for i in range(0, len(val) - 7, 8):
                if val[i] == 0x06 and val[i + 1] == 0x00:
                    seq = struct.unpack_from("!I", val, i + 4)[0]
    return adv, wd, seq


class BgpWatch:
    """Decodes BGP (TCP/179) on leaf1's underlay veth into timestamped `EvpnUpdate`s.

    Both directions cross that one veth, so a single capture sees what either
    leaf sends, stamped by the kernel when it crossed.
    """

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self._streams: dict[tuple[str, int, str, int], tuple[int | None, bytes]] = {}
        self._parsed = 0
        self.updates: list[EvpnUpdate] = []

    @staticmethod
    def is_bgp(frame: bytes) -> bool:
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return False
        ihl = (frame[14] & 0xF) * 4
        sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
        return 179 in (sport, dport)

    def poll(self) -> list[EvpnUpdate]:
        """Decode frames captured since the last call; return all updates so far."""
        frames = self.capture.matching()
        for frame in frames[self._parsed :]:
            self._feed(frame.data, frame.timestamp)
        self._parsed = len(frames)
        return list(self.updates)

    def _feed(self, data: bytes, ts: float) -> None:
        ihl = (data[14] & 0xF) * 4
        total = struct.unpack_from("!H", data, 16)[0]
        src = socket.inet_ntoa(data[26:30])
        dst = socket.inet_ntoa(data[30:34])
        tcp = 14 + ihl
        sport, dport, seqno = struct.unpack_from("!HHI", data, tcp)
        doff = (data[tcp + 12] >> 4) * 4
        payload = data[tcp + doff : 14 + total]
        if not payload:
            return
        key = (src, sport, dst, dport)
        expect, buf = self._streams.get(key, (None, b""))
        if expect is not None and seqno != expect:
            # Retransmission or a gap: veths do not lose frames, so only skip
            # bytes already seen; on a real gap, resynchronise on the next marker.
            skip = (expect - seqno) & 0xFFFFFFFF
            if skip < len(payload):
                payload = payload[skip:]
            elif skip < 1 << 31:
                return
            else:
                buf = b""
        buf += payload
        expect = (seqno + len(data[tcp + doff : 14 + total])) & 0xFFFFFFFF
        while len(buf) >= 19:
            if buf[:16] != b"\xff" * 16:
                marker = buf.find(b"\xff" * 16, 1)
                buf = buf[marker:] if marker > 0 else b""
                continue
            mlen = struct.unpack_from("!H", buf, 16)[0]
            if len(buf) < mlen:
                break
            if buf[18] == 2:  # UPDATE
                adv, wd, seq = parse_bgp_update(buf[19:mlen])
                for mac, ip in wd:
                    self.updates.append(EvpnUpdate(ts, src, True, mac, ip, None))
                for mac, ip in adv:
                    self.updates.append(EvpnUpdate(ts, src, False, mac, ip, seq))
            buf = buf[mlen:]
        self._streams[key] = (expect, buf)

    @staticmethod
    def leaf_of(sender: str) -> str:
        return next(leaf for leaf, addr in UNDERLAY.items() if addr == sender)


# --------------------------------------------------------------------------- the fabric


@dataclass(frozen=True)
class MacIpRoute:
    mac: str
    ip: str | None  # None for a MAC-only route
    vtep: str  # originating VTEP (the route's next hop)
    local: bool  # originated by the leaf we asked
    seq: int = 0  # MAC mobility sequence number (0 when the community is absent)


@dataclass(frozen=True)
class Neighbor:
    ip: str
    lladdr: str | None
    state: list[str]
    flags: list[str] = field(default_factory=list)
    protocol: str | None = None

    @property
    def remote(self) -> bool:
        return "NOARP" in self.state and "extern_learn" in self.flags


class EvpnFabric:
    """Two FRR leaves (iBGP EVPN, VNI 100, ARP/ND suppression), two hypervisors, one VM.

    Builds and starts everything in the constructor and returns only when BGP
    is Established and each leaf knows the other as a VTEP for VNI 100.
    Namespaces and daemons belong to `lab` and go away with it; `close()`
    (also run at interpreter exit) removes the FRR state directory.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        vm_behind_hypervisor: bool = True,
        vm_ipv6: bool = False,
        dup_addr_detection: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.lab = lab
        self.vm_behind_hypervisor = vm_behind_hypervisor
        self.vm_ipv6 = vm_ipv6
        self.vm_location = "hv1" if vm_behind_hypervisor else "leaf1"
        self.monitors: dict[str, NeighMonitor] = {}
        self._dir = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-frr-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.leaf1 = lab.netns("leaf1")
        self.leaf2 = lab.netns("leaf2")
        self.hv1 = lab.netns("hv1")
        self.hv2 = lab.netns("hv2")
        self.vm = lab.netns("vm")
        self.ns = {
            "leaf1": self.leaf1,
            "leaf2": self.leaf2,
            "hv1": self.hv1,
            "hv2": self.hv2,
            "vm": self.vm,
        }
        self._build_links()
        for leaf in ("leaf1", "leaf2"):
            self._start_frr(leaf, dup_addr_detection)
        self._wait_converged(start_timeout)
        # The underlay capture starts after convergence: only migration-time
        # updates are of interest, and the initial table exchange is noise.
        self.bgp = BgpWatch(self.leaf1.capture("ul", BgpWatch.is_bgp))

    # ----------------------------------------------------------------- building

    def _build_links(self) -> None:
        lab, l1, l2 = self.lab, self.leaf1, self.leaf2
        # Only the SVIs (and the VM, when asked) speak IPv6: link-local chatter
        # (MLD, RS) from switch ports would be learned and advertised as hosts.
        for ns in (self.hv1, self.hv2, l1, l2):
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        lab.veth(l1, "ul", l2, "ul")
        for leaf, ns in (("leaf1", l1), ("leaf2", l2)):
            other = OTHER[leaf]
            ns.sysctl("net.ipv4.ip_forward", 1)
            ns.sysctl("net.ipv6.conf.all.forwarding", 1)
            ns.ip("addr", "add", f"{UNDERLAY[leaf]}/31", "dev", "ul")
            ns.ip("addr", "add", f"{VTEP[leaf]}/32", "dev", "lo")
            ns.ip("route", "add", f"{VTEP[other]}/32", "via", UNDERLAY[other])
            ns.ip(
                "link", "add", "vxlan100", "type", "vxlan", "id", str(VNI),
                "local", VTEP[leaf], "dstport", "4789", "nolearning",
            )  # fmt: skip
            hv = "hv1" if leaf == "leaf1" else "hv2"
            lab.veth(ns, "hv", self.ns[hv], "uplink")
            ip4, ip6, svi_mac = SVI[leaf]
            ns.bridge("br100", "vxlan100", "hv", mac=svi_mac)
            ns.sysctl("net.ipv6.conf.br100.disable_ipv6", 0)
            ns.run("bridge", "link", "set", "dev", "vxlan100", "neigh_suppress", "on",
                   "learning", "off")  # fmt: skip
            ns.ip("addr", "add", f"{ip4}/24", "dev", "br100")
            ns.ip("addr", "add", f"{ip6}/64", "dev", "br100", "nodad")
            self.ns[hv].bridge("hvbr", "uplink")
        # The VM: its only interface is eth0; the peer "vmtap" is its virtual cable.
        build_silent_vm(
            lab, self.vm, self.ns[self.vm_location], self._bridge_of(self.vm_location),
            mac=VM_MAC, ip4=f"{VM_IP4}/24", ip6=f"{VM_IP6}/64" if self.vm_ipv6 else None,
        )  # fmt: skip

    @staticmethod
    def _bridge_of(location: str) -> str:
        return "hvbr" if location.startswith("hv") else "br100"

    def _frr_dir(self, leaf: str) -> Path:
        return self._dir / leaf

    def _start_frr(self, leaf: str, dup_addr_detection: bool) -> None:
        d = self._frr_dir(leaf)
        d.mkdir(parents=True)
        bgpd = bgp_evpn_conf(
            leaf, d, VTEP[leaf], [UNDERLAY[OTHER[leaf]]], dup_addr_detection=dup_addr_detection
        )
        start_frr(self.ns[leaf], d, leaf, bgpd)

    def _wait_converged(self, timeout: float) -> None:
        def ready() -> bool:
            for leaf in ("leaf1", "leaf2"):
                vni = self.vtysh(leaf, f"show evpn vni {VNI} json", check=False)
                if not isinstance(vni, dict):
                    return False
                remote = vni.get("remoteVteps") or vni.get("numRemoteVteps")
                if not remote or VTEP[OTHER[leaf]] not in json.dumps(vni):
                    return False
            return True

        wait_until(ready, timeout=timeout, interval=0.1, what="BGP EVPN up, VNI 100 on both")

    def close(self) -> None:
        for mon in self.monitors.values():
            mon.close()
        self.monitors.clear()
        self._finalizer()

    # ----------------------------------------------------------------- FRR queries

    def vtysh(self, leaf: str, command: str, check: bool = True) -> Any:
        """Run one vtysh command on `leaf`; parsed JSON if the command ends in "json"."""
        return vtysh(self._frr_dir(leaf), command, check)

    def macip_routes(self, leaf: str, *, with_ip_only: bool = False) -> set[MacIpRoute]:
        """Valid EVPN type-2 routes in `leaf`'s global BGP EVPN table (all RDs).

        During a move both leaves' routes can be present at once; which one
        wins is zebra's business (see `arp_cache`/`evpn_macs`).
        """
        table = self.vtysh(leaf, "show bgp l2vpn evpn route type macip json")
        return parse_macip_table(table, VTEP[leaf], with_ip_only=with_ip_only)

    def arp_cache(self, leaf: str) -> dict[str, dict[str, Any]]:
        """zebra's `show evpn arp-cache vni 100` (neighbours: local/remote, sequence numbers)."""
        data = self.vtysh(leaf, f"show evpn arp-cache vni {VNI} json") or {}
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def evpn_macs(self, leaf: str) -> dict[str, dict[str, Any]]:
        """zebra's `show evpn mac vni 100` (type local/remote, remoteVtep, sequence numbers)."""
        data = self.vtysh(leaf, f"show evpn mac vni {VNI} json") or {}
        return dict(data.get("macs", {}))

    def neighbors(self, leaf: str, family: int = 4) -> list[Neighbor]:
        """The kernel's neighbour table on `leaf`'s br100."""
        out = self.ns[leaf].ip(f"-{family}", "-j", "neigh", "show", "dev", "br100").stdout
        # iproute2 prints flags such as extern_learn as keys with a null value.
        return [
            Neighbor(
                n["dst"],
                n.get("lladdr"),
                n.get("state", []),
                [k for k in ("extern_learn", "router", "proxy", "offload", "managed") if k in n],
                n.get("protocol"),
            )
            for n in json.loads(out or "[]")
        ]

    def neighbor(self, leaf: str, ip: str) -> Neighbor | None:
        family = 6 if ":" in ip else 4
        return next((n for n in self.neighbors(leaf, family) if n.ip == ip), None)

    def wait_macip(
        self, leaf: str, ip: str = VM_IP4, *, vtep: str | None = None, timeout: float = 5.0
    ) -> MacIpRoute:
        """Wait until `leaf`'s BGP table holds VM_MAC/`ip` (from `vtep`, if given) as best path."""

        def found() -> MacIpRoute | None:
            for r in self.macip_routes(leaf):
                if r.mac == VM_MAC and r.ip == ip and (vtep is None or r.vtep == vtep):
                    return r
            return None

        result: MacIpRoute = wait_until(
            found, timeout=timeout, interval=0.05, what=f"{VM_MAC}/{ip} on {leaf} via {vtep}"
        )
        return result

    def monitor(self, leaf: str) -> NeighMonitor:
        """Start (once) a timestamped neighbour/fdb event stream for `leaf`."""
        if leaf not in self.monitors:
            self.monitors[leaf] = NeighMonitor(self.ns[leaf])
        return self.monitors[leaf]

    # ----------------------------------------------------------------- scenario steps

    def vm_ips(self) -> list[str]:
        return [VM_IP4, VM_IP6] if self.vm_ipv6 else [VM_IP4]

    def learn_vm(self, timeout: float = 10.0) -> None:
        """Make the VM's current leaf learn it locally, and wait for the other
        leaf's zebra to install the remote (NOARP, extern_learn) entries.

        The VM sends exactly one ARP request (and one NS) for its leaf's SVI,
        hand-built on a packet socket rather than with ping: the leaf creates
        a STALE entry that nothing uses (so it never re-probes the VM), and
        the VM's kernel keeps no neighbour state of its own (the leaf's answer
        is unsolicited to it), so nothing makes the VM talk again later.
        """
        leaf = self.vm_leaf
        ip4, ip6, _ = SVI[leaf]
        frames = [arp_request_frame(VM_MAC, VM_IP4, ip4)]
        if self.vm_ipv6:
            frames.append(ns_frame(VM_MAC, VM_IP6, ip6))
        self.send_from_vm(frames)
        for ip in self.vm_ips():
            wait_until(
                partial(self.has_remote_neighbor, OTHER[leaf], ip),
                timeout=timeout,
                interval=0.02,
                what=f"remote neighbour {ip} on {OTHER[leaf]}",
            )
        if self.vm_ipv6:
            # Unlike an ARP reply, the leaf's NA goes out through its new
            # entry for the VM (STALE -> DELAY): 5 s later the leaf would
            # probe the VM and make it answer. Park the entry in STALE.
            self.ns[leaf].ip("-6", "neigh", "change", VM_IP6, "lladdr", VM_MAC,
                             "dev", "br100", "nud", "stale")  # fmt: skip

    def has_remote_neighbor(self, leaf: str, ip: str = VM_IP4) -> bool:
        """Does `leaf`'s kernel hold zebra's remote entry (VM MAC, NOARP extern_learn) for `ip`?"""
        n = self.neighbor(leaf, ip)
        return n is not None and n.remote and n.lladdr == VM_MAC

    def send_from_vm(self, frames: list[bytes]) -> None:
        sock = self.vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with contextlib.closing(sock):
            sock.bind(("eth0", 0))
            for frame in frames:
                sock.send(frame)

    def silence_vm(self) -> None:
        """Make the VM answer nothing from now on: without its addresses, its
        kernel replies to no ARP request and no NS (RARPs are still sent for it,
        like a hypervisor announcing a guest that hangs or is firewalled)."""
        self.vm.ip("addr", "flush", "dev", "eth0")

    def start_daemons(
        self, *args: str, leaves: tuple[str, ...] = ("leaf1", "leaf2"), timeout: float = 15.0
    ) -> dict[str, DaemonProc]:
        """Run `rarp-reply` (JSON log, debug level, `args`) on `leaves`; return once all are ready.

        Started together and only then waited for, so two leaves cost one
        start-up time. The processes belong to the lab and end with it.
        """
        return start_daemons({leaf: self.ns[leaf] for leaf in leaves}, *args, timeout=timeout)

    def migrate(self) -> float:
        """Re-plug the VM's cable to the other hypervisor (or leaf); time.time() when it was
        moved (returned once the kernel has it up and forwarding).

        Moving a veth end to another namespace brings it down; it is
        enslaved and set up again at the destination. The VM sees only a
        carrier blip and, being configured silent, sends nothing.
        """
        src = self.vm_location
        dst = {"hv1": "hv2", "hv2": "hv1", "leaf1": "leaf2", "leaf2": "leaf1"}[src]
        replugged = replug(self.ns[src], self.ns[dst], self._bridge_of(dst), self.vm)
        self.vm_location = dst
        return replugged

    @property
    def vm_leaf(self) -> str:
        """The leaf the VM currently hangs off."""
        return {"hv1": "leaf1", "hv2": "leaf2"}.get(self.vm_location, self.vm_location)

    def send_rarps(
        self, pattern: str = "qemu", after_each: Callable[[int], None] | None = None
    ) -> float:
        """Send the VM's RARP announcement; returns time.time() of the first frame.

        Injected on a packet socket on the VM's eth0 (QEMU writes them into
        the VM's tap the same way): they enter the host bridge through
        "vmtap", so every bridge on the way learns the MAC on the right port.
        No kernel state of the VM is involved. pattern "qemu": 5 frames at
        +0/50/200/450/800 ms; "once": one frame. `after_each(i)` runs right
        after frame i (to interleave probes, as the original design did).
        """
        return send_rarps(self.vm, VM_MAC, pattern, after_each)

    def probe_from(
        self, leaf: str, ip: str = VM_IP4, *, unicast: bool = True, solicited_node: bool = False
    ) -> None:
        """One hand-built ARP request (or NS for an IPv6 `ip`) from `leaf`'s SVI to the VM.

        Sent on a packet socket, so the leaf's kernel has no INCOMPLETE entry
        waiting for the answer: this is the original design's probe. For a NS,
        `solicited_node` sends it (still to the VM's MAC when `unicast`) to the
        solicited-node address so that the NA carries the VM's MAC.
        """
        ip4, ip6, svi_mac = SVI[leaf]
        dst_mac = VM_MAC if unicast else None
        if ":" in ip:
            frame = ns_frame(
                svi_mac, ip6, ip, dst_mac, solicited_node=solicited_node or not unicast
            )
        else:
            frame = arp_request_frame(svi_mac, ip4, ip, dst_mac)
        sock = self.ns[leaf].socket(socket.AF_PACKET, socket.SOCK_RAW)
        with contextlib.closing(sock):
            sock.bind(("br100", 0))
            sock.send(frame)


# --------------------------------------------------------------------------- FRR


def bgp_evpn_conf(
    hostname: str,
    d: Path,
    router_id: str,
    peers: list[str],
    *,
    dup_addr_detection: bool = False,
    evpn_extra: str = "",
    extra: str = "",
) -> str:
    """bgpd.conf of an iBGP (AS 65000) EVPN leaf peering with `peers`, `advertise-all-vni`.

    `no dup-addr-detection` unless asked: a lab moves the same VM back and forth, and
    FRR's default (5 moves in 180 s) would freeze it. Fast timers and no advertisement
    interval: the labs time what bgpd does, not how long it waits to do it.
    `evpn_extra` goes into the l2vpn evpn address family, `extra` after the default
    instance (e.g. a VRF's `router bgp 65000 vrf ...`).
    """
    lines = [
        f"hostname {hostname}",
        f"log file {d}/bgpd.log",
        "router bgp 65000",
        f" bgp router-id {router_id}",
        " no bgp default ipv4-unicast",
        " no bgp network import-check",
        " timers bgp 3 9",
    ]
    for peer in peers:
        lines += [
            f" neighbor {peer} remote-as 65000",
            f" neighbor {peer} timers connect 1",
            f" neighbor {peer} advertisement-interval 0",
        ]
    lines.append(" address-family l2vpn evpn")
    lines += [f"  neighbor {peer} activate" for peer in peers]
    lines.append("  advertise-all-vni")
    if not dup_addr_detection:
        lines.append("  no dup-addr-detection")
    return "\n".join(lines) + "\n" + evpn_extra + " exit-address-family\n" + extra


def start_frr(ns: Netns, d: Path, hostname: str, bgpd_conf: str, zebra_extra: str = "") -> None:
    """Run zebra, then bgpd, in `ns` with their state in `d` (which must exist);
    return once bgpd's vty socket is there. Foreground processes owned by the Lab:
    it terminates them on close."""
    (d / "zebra.conf").write_text(f"hostname {hostname}\nlog file {d}/zebra.log\n{zebra_extra}")
    (d / "bgpd.conf").write_text(bgpd_conf)
    for path in (d.parent, d, *d.iterdir()):
        shutil.chown(path, "frr", "frr")
    zserv = f"{d}/zserv.api"
    common = ["-u", "frr", "-g", "frr", "-P", "0", "-z", zserv, "--vty_socket", str(d)]
    log = (d / "stdout.log").open("w")
    ns.popen(str(FRR_DIR / "zebra"), *common, "-f", f"{d}/zebra.conf",
             "-i", f"{d}/zebra.pid", stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    wait_until(lambda: Path(zserv).exists(), timeout=10, what=f"{hostname} zebra socket")
    ns.popen(str(FRR_DIR / "bgpd"), *common, "-f", f"{d}/bgpd.conf",
             "-i", f"{d}/bgpd.pid", stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    log.close()
    wait_until((d / "bgpd.vty").exists, timeout=10, what=f"{hostname} bgpd vty")


def vtysh(d: Path, command: str, check: bool = True) -> Any:
    """Run one vtysh command on the FRR whose sockets are in `d`; parsed JSON if the
    command ends in "json" (None when unparsable and not `check`)."""
    proc = run(["vtysh", "--vty_socket", str(d), "-c", command], check=check)
    if not command.rstrip().endswith("json"):
        return proc.stdout
    try:
        return json.loads(proc.stdout or "null")
    except json.JSONDecodeError:
        if check:
            raise
        return None


def parse_macip_table(table: Any, own_vtep: str, *, with_ip_only: bool = False) -> set[MacIpRoute]:
    """Valid EVPN type-2 routes of `show bgp l2vpn evpn route type macip json` (all RDs)."""
    routes: set[MacIpRoute] = set()
    for rd, prefixes in (table or {}).items():
        if not isinstance(prefixes, dict) or ":" not in rd:
            continue
        for prefix, entry in prefixes.items():
            if not isinstance(entry, dict) or not prefix.startswith("[2]"):
                continue
            for path in _valid_paths(entry):
                mac = path.get("mac") or _field(prefix, 3)
                ip = path.get("ip") or _ip_field(prefix)
                if with_ip_only and not ip:
                    continue
                nh = _nexthop(path)
                comm = path.get("extendedCommunity", {}).get("string", "")
                seq = next((int(c[3:]) for c in comm.split() if c.startswith("MM:")), 0)
                routes.add(MacIpRoute(mac, ip, nh, nh == own_vtep, seq))
    return routes


def start_daemons(
    namespaces: dict[str, Netns], *args: str, timeout: float = 15.0
) -> dict[str, DaemonProc]:
    """Run `rarp-reply` (JSON log, debug level, `args`) in each namespace; return once all
    are ready. Started together and only then waited for, so N leaves cost one start-up
    time. The processes belong to the lab and end with it."""
    procs = {name: DaemonProc(ns, *args) for name, ns in namespaces.items()}
    for proc in procs.values():
        proc.ready(timeout)
    return procs


# --------------------------------------------------------------------------- the VM


def build_silent_vm(
    lab: Lab, vm: Netns, host: Netns, bridge: str, *, mac: str, ip4: str, ip6: str | None
) -> None:
    """The VM: eth0 (`mac`, `ip4` and `ip6` with their prefix lengths), its peer "vmtap" a
    port of `bridge` in `host`. It answers ARP, ND and ICMP and originates nothing."""
    # Silence: no gratuitous ARP on link changes, and IPv6 off unless asked.
    vm.sysctl("net.ipv4.conf.all.arp_notify", 0)
    vm.sysctl("net.ipv6.conf.all.disable_ipv6", 0 if ip6 else 1)
    vm.sysctl("net.ipv6.conf.default.disable_ipv6", 0 if ip6 else 1)
    lab.veth(host, "vmtap", vm, "eth0", up=False)
    vm.ip("link", "set", "eth0", "address", mac)
    vm.ip("addr", "add", ip4, "dev", "eth0")
    if ip6:
        for key, val in (("accept_dad", 0), ("router_solicitations", 0), ("accept_ra", 0),
                         ("ndisc_notify", 0), ("addr_gen_mode", 1)):  # fmt: skip
            vm.sysctl(f"net.ipv6.conf.eth0.{key}", val)
        vm.ip("addr", "add", ip6, "dev", "eth0", "nodad")
        # Answering a leaf's NS creates an entry for the leaf (the NA goes
        # out through it: STALE -> DELAY) and 5 s later the VM would
        # re-probe the leaf on its own. A silent guest must not; keep the
        # entry in DELAY for an hour instead.
        vm.sysctl("net.ipv6.neigh.eth0.delay_first_probe_time", 3600)
        # The kernel re-sends MLD reports whenever carrier returns ("we might
        # have roamed"): after a re-plug that would announce the VM before
        # any RARP. MLD is the only IPv6 traffic with a hop-by-hop header,
        # so drop next-header 0 on egress and keep the VM quiet.
        # (htb + a zero-length pfifo: this kernel has no tc actions to drop with.)
        for cmd in (
            "qdisc add dev eth0 root handle 1: htb default 1",
            "class add dev eth0 parent 1: classid 1:1 htb rate 10gbit",
            "class add dev eth0 parent 1: classid 1:2 htb rate 10gbit",
            "qdisc add dev eth0 parent 1:2 handle 2: pfifo limit 0",
            "filter add dev eth0 parent 1: protocol ipv6 u32 match u8 0 0xff at 6 flowid 1:2",
        ):
            vm.run("tc", *cmd.split())
    vm.link_up("eth0")
    host.ip("link", "set", "vmtap", "master", bridge, "up")


def replug(src: Netns, dst: Netns, bridge: str, vm: Netns) -> float:
    """Move the VM's cable "vmtap" from `src` to `bridge` in `dst`; time.time() when it was
    moved (returned once the kernel has it up and forwarding).

    Moving a veth end to another namespace brings it down; it is enslaved and set up
    again at the destination. The VM sees only a carrier blip and, being configured
    silent, sends nothing.
    """
    src.ip("link", "set", "vmtap", "netns", dst.name)
    dst.ip("link", "set", "vmtap", "master", bridge, "up")
    replugged = time.time()
    # The cable is in when the kernel says so: until linkwatch has seen the carrier
    # (rate-limited to one run a second, net/core/link_watch.c), both veth ends keep
    # the noop qdisc and drop what is sent, and the bridge port forwards nothing. A
    # hypervisor announces a resumed guest through a tap that is up.
    wait_until(
        lambda: link_up(vm, "eth0") and port_forwarding(dst, "vmtap"),
        timeout=5.0,
        what="the re-plugged cable up and forwarding",
    )
    return replugged


def link_up(ns: Netns, ifname: str) -> bool:
    [link] = json.loads(ns.ip("-j", "link", "show", "dev", ifname).stdout)
    return bool(link.get("operstate") == "UP")


def port_forwarding(ns: Netns, port: str) -> bool:
    out = ns.run("bridge", "-j", "link", "show", "dev", port).stdout
    return any(p.get("state") == "forwarding" for p in json.loads(out or "[]"))


def send_rarps(
    vm: Netns,
    mac: str,
    pattern: str = "qemu",
    after_each: Callable[[int], None] | None = None,
) -> float:
    """Send `mac`'s RARP announcement from `vm`'s eth0; returns time.time() of the first frame.

    Injected on a packet socket on the VM's eth0 (QEMU writes them into the VM's tap
    the same way): they enter the host bridge through "vmtap", so every bridge on the
    way learns the MAC on the right port. No kernel state of the VM is involved.
    pattern "qemu": 5 frames at +0/50/200/450/800 ms; "once": one frame. `after_each(i)`
    runs right after frame i (to interleave probes, as the original design did).
    """
    offsets = {"qemu": QEMU_RARP_OFFSETS, "once": (0.0,)}[pattern]
    frame = rarp_frame(mac)
    sock = vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
    first = 0.0
    with contextlib.closing(sock):
        sock.bind(("eth0", 0))
        start = time.monotonic()
        for i, off in enumerate(offsets):
            delay = start + off - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.time()
            sock.send(frame)
            if i == 0:
                first = sent
            if after_each is not None:
                after_each(i)
    return first


def _valid_paths(entry: dict[str, Any]) -> list[dict[str, Any]]:
    # "paths" is a list of lists (one inner list per path) in FRR 8.x JSON.
    flat: list[dict[str, Any]] = []
    for p in entry.get("paths", []):
        flat.extend(p if isinstance(p, list) else [p])
    return [p for p in flat if isinstance(p, dict) and p.get("valid")]


def _nexthop(path: dict[str, Any]) -> str:
    hops = path.get("nexthops") or []
    return str(hops[0].get("ip")) if hops else ""


def _field(prefix: str, index: int) -> str:
    return prefix.replace("]:[", "|").strip("[]").split("|")[index]


def _ip_field(prefix: str) -> str | None:
    parts = prefix.replace("]:[", "|").strip("[]").split("|")
    if len(parts) >= 6 and parts[5]:
        return str(ipaddress.ip_address(parts[5]))
    return None
