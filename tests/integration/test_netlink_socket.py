"""RtnlSocket against a real kernel, in a namespace of its own.

Topology (namespace "nl"; "peer" only answers ARP/ND on the other end of the veth):

    peer: eth0 192.0.2.20/24 2001:db8::20/64
           |  veth
    nl:   vp0 --+
                +-- br0 192.0.2.1/24 2001:db8::1/64 <-- mv0 (macvlan on br0)
          vx0 --+   (vxlan id 100, local 192.0.2.1, nolearning)
"""

from __future__ import annotations

import errno
import json
import os
import select
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import cast

import pytest

from rarp_replay.errors import NetlinkError, NetlinkOverrunError
from rarp_replay.netlink import codec
from rarp_replay.netlink.records import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    NTF_EXT_LEARNED,
    NTF_SELF,
    NUD_FAILED,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    Address,
    BridgePort,
    Change,
    Event,
    Link,
    Neighbor,
)
from rarp_replay.netlink.socket import RtnlSocket
from tests.support import netlab

pytestmark = pytest.mark.netns

ALL_GROUPS = (
    codec.RTMGRP_LINK | codec.RTMGRP_NEIGH | codec.RTMGRP_IPV4_IFADDR | codec.RTMGRP_IPV6_IFADDR
)

NUD_NAMES = {
    "INCOMPLETE": 0x01,
    "REACHABLE": 0x02,
    "STALE": 0x04,
    "DELAY": 0x08,
    "PROBE": 0x10,
    "FAILED": 0x20,
    "NOARP": 0x40,
    "PERMANENT": 0x80,
    "NONE": 0x00,
}

# iproute2's /etc/iproute2/rt_protos: "zebra" is RTPROT_ZEBRA (11); FRR's BGP (which
# installs EVPN-learned neighbors) is 186, named "bgp".
PROTO_ZEBRA = 11
PROTO_BGP = 186


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@dataclass
class Topo:
    ns: netlab.Netns
    peer: netlab.Netns
    index: dict[str, int] = field(default_factory=dict)
    sockets: list[RtnlSocket] = field(default_factory=list)

    def open(self, groups: int = 0, rcvbuf: int = 4 << 20) -> RtnlSocket:
        with netlab.entered(self.ns.name):
            sock = RtnlSocket(groups, rcvbuf)
        self.sockets.append(sock)
        return sock

    def ip_json(self, *args: str) -> list[dict[str, object]]:
        out: list[dict[str, object]] = json.loads(self.ns.ip("-j", *args).stdout or "[]")
        return out

    def neigh_json(self, dst: str) -> dict[str, object] | None:
        entries = self.ip_json("neigh", "show", "to", dst, "dev", "br0", "nud", "all")
        return entries[0] if entries else None


@pytest.fixture
def topo(lab: netlab.Lab) -> Iterator[Topo]:
    ns, peer = lab.netns("nl"), lab.netns("peer")
    lab.veth(ns, "vp0", peer, "eth0")
    ns.ip(
        "link", "add", "vx0", "type", "vxlan", "id", "100", "local", "192.0.2.1",
        "dstport", "4789", "nolearning",
    )  # fmt: skip
    ns.bridge("br0", "vp0", "vx0")
    ns.ip("link", "add", "mv0", "link", "br0", "type", "macvlan", "mode", "bridge")
    ns.link_up("mv0")
    ns.ip("addr", "add", "192.0.2.1/24", "dev", "br0")
    ns.ip("addr", "add", "2001:db8::1/64", "dev", "br0", "nodad")
    peer.ip("addr", "add", "192.0.2.20/24", "dev", "eth0")
    peer.ip("addr", "add", "2001:db8::20/64", "dev", "eth0", "nodad")
    # Fast, bounded resolution failures: 3 probes 100 ms apart instead of 1 s apart.
    for af in ("ipv4", "ipv6"):
        ns.sysctl(f"net.{af}.neigh.br0.retrans_time_ms", 100)
    t = Topo(ns, peer)
    for name in ("lo", "br0", "vp0", "vx0", "mv0"):
        t.index[name] = ns.ifindex(name)
    try:
        yield t
    finally:
        for sock in t.sockets:
            sock.close()


def by_name(events: list[Event]) -> dict[str, Link]:
    links = [e.record for e in events if isinstance(e.record, Link)]
    return {link.name: link for link in links}


def collect(sock: RtnlSocket, match: Callable[[Event], bool], what: str) -> list[Event]:
    """Read notifications until one satisfies `match` (bounded wait); return all read."""
    got: list[Event] = []

    def step() -> bool:
        select.select([sock], [], [], 0.05)
        new = sock.recv_events()
        got.extend(new)
        return any(match(e) for e in new)

    netlab.wait_until(step, timeout=5.0, what=what)
    return got


def neighbor_event(
    change: Change | None = None, address: str | None = None, **fields: object
) -> Callable[[Event], bool]:
    """A matcher for neighbor events: change, address (as text) and any record fields."""

    def match(e: Event) -> bool:
        n = e.record
        return (
            isinstance(n, Neighbor)
            and (change is None or e.change is change)
            and (address is None or n.address == ip_address(address))
            and all(getattr(n, k) == v for k, v in fields.items())
        )

    return match


def address_event(change: Change, want: Address) -> Callable[[Event], bool]:
    def match(e: Event) -> bool:
        got = e.record
        return (
            e.change is change
            and isinstance(got, Address)
            and (got.index, got.address, got.prefixlen)
            == (want.index, want.address, want.prefixlen)
        )

    return match


def neighbors_in(events: list[Event], address: str) -> list[Neighbor]:
    return [
        n
        for e in events
        if isinstance(n := e.record, Neighbor) and n.address == ip_address(address)
    ]


# --- dumps ------------------------------------------------------------------------------------


def test_link_dump_kinds_masters_and_lower(topo: Topo) -> None:
    sock = topo.open()
    events = sock.dump(codec.RTM_GETLINK)
    assert all(e.change is Change.NEW for e in events)
    links = by_name(events)
    assert set(links) == {"lo", "br0", "vp0", "vx0", "mv0"}
    idx = topo.index
    for name, link in links.items():
        assert link.index == idx[name]
    br0, vp0, vx0, mv0 = links["br0"], links["vp0"], links["vx0"], links["mv0"]
    assert (br0.kind, vp0.kind, vx0.kind, mv0.kind) == ("bridge", "veth", "vxlan", "macvlan")
    assert vp0.master == idx["br0"] and vp0.slave_kind == "bridge"
    assert vx0.master == idx["br0"] and vx0.slave_kind == "bridge"
    assert br0.master is None and mv0.master is None
    assert mv0.lower == idx["br0"]
    # The veth's peer lives in the other namespace: IFLA_LINK is only meaningful with
    # IFLA_LINK_NETNSID.
    assert vp0.link_netnsid is not None
    assert br0.mac == topo.ns.mac("br0") and mv0.mac == topo.ns.mac("mv0")
    assert br0.is_up and vp0.is_up and mv0.is_up
    assert links["lo"].kind is None


def test_bridge_port_dump(topo: Topo) -> None:
    # AF_BRIDGE with RTEXT_FILTER_BRVLAN_COMPRESSED: what the daemon asks for at start.
    # Every port of br0 (and br0 itself, which br_getlink includes only with a BRVLAN
    # bit) comes as a BridgePort, never as a Link; VLAN lists need a kernel with
    # VLAN filtering (the VM suite checks those: tests/vm).
    sock = topo.open()
    events = sock.dump(codec.RTM_GETLINK, AF_BRIDGE, ext_mask=codec.RTEXT_FILTER_BRVLAN_COMPRESSED)
    assert events and all(isinstance(e.record, BridgePort) for e in events)
    ports = {e.record.name: e.record for e in events if isinstance(e.record, BridgePort)}
    idx = topo.index
    assert {"vp0", "vx0"} <= set(ports) <= {"vp0", "vx0", "br0"}
    assert ports["vp0"].index == idx["vp0"] and ports["vp0"].master == idx["br0"]
    plain = sock.dump(codec.RTM_GETLINK, AF_BRIDGE)  # no mask: ports only, never the bridge
    assert {e.record.name for e in plain if isinstance(e.record, BridgePort)} == {"vp0", "vx0"}


def test_address_dump(topo: Topo) -> None:
    sock = topo.open()
    events = sock.dump(codec.RTM_GETADDR)
    ours = {(a.index, a.address, a.prefixlen) for e in events if isinstance(a := e.record, Address)}
    br0 = topo.index["br0"]
    assert (br0, IPv4Address("192.0.2.1"), 24) in ours
    assert (br0, IPv6Address("2001:db8::1"), 64) in ours
    assert (topo.index["lo"], IPv4Address("127.0.0.1"), 8) in ours
    # Same set as `ip -j addr show`.
    expected = {
        (topo.index[str(link["ifname"])], ip_address(str(info["local"])), int(info["prefixlen"]))
        for link in topo.ip_json("addr", "show")
        for info in link["addr_info"]  # type: ignore[attr-defined]
    }
    assert ours == expected
    only_v4 = sock.dump(codec.RTM_GETADDR, AF_INET)
    assert {e.record.family for e in only_v4} == {AF_INET}  # type: ignore[union-attr]


def install_neighbors(topo: Topo) -> list[Neighbor]:
    ns, br0 = topo.ns, topo.index["br0"]
    ns.ip(
        "neigh", "replace", "192.0.2.10", "lladdr", "52:54:00:00:00:10", "dev", "br0",
        "nud", "noarp", "extern_learn", "proto", "zebra",
    )  # fmt: skip
    ns.ip(
        "neigh", "replace", "192.0.2.11", "lladdr", "52:54:00:00:00:11", "dev", "br0",
        "nud", "noarp", "extern_learn", "proto", "186",
    )  # fmt: skip
    ns.ip(
        "neigh", "replace", "2001:db8::10", "lladdr", "52:54:00:00:00:20", "dev", "br0",
        "nud", "noarp", "extern_learn", "proto", "bgp",
    )  # fmt: skip
    ns.ip(
        "neigh", "replace", "2001:db8::11", "lladdr", "52:54:00:00:00:21", "dev", "br0",
        "nud", "permanent",
    )  # fmt: skip
    return [
        Neighbor(
            AF_INET, br0, IPv4Address("192.0.2.10"), mac("52:54:00:00:00:10"),
            NUD_NOARP, NTF_EXT_LEARNED, PROTO_ZEBRA,
        ),
        Neighbor(
            AF_INET, br0, IPv4Address("192.0.2.11"), mac("52:54:00:00:00:11"),
            NUD_NOARP, NTF_EXT_LEARNED, PROTO_BGP,
        ),
        Neighbor(
            AF_INET6, br0, IPv6Address("2001:db8::10"), mac("52:54:00:00:00:20"),
            NUD_NOARP, NTF_EXT_LEARNED, PROTO_BGP,
        ),
        Neighbor(
            AF_INET6, br0, IPv6Address("2001:db8::11"), mac("52:54:00:00:00:21"),
            NUD_PERMANENT,
        ),
    ]  # fmt: skip


NeighKey = tuple[int, int, str, bytes | None, int, int, int]


def key(n: Neighbor) -> NeighKey:
    return (n.family, n.index, str(n.address), n.lladdr, n.state, n.flags, n.protocol)


def pyroute2_neighbors(ns_name: str) -> set[NeighKey]:
    """The same table through pyroute2's own (independent) decoder."""
    from pyroute2 import IPRoute  # noqa: PLC0415 (test-only dependency)

    out: set[NeighKey] = set()
    with netlab.entered(ns_name):
        ipr = IPRoute()
        try:
            for family in (AF_INET, AF_INET6):
                for m in ipr.get_neighbours(family=family):
                    lladdr = m.get_attr("NDA_LLADDR")
                    out.add(
                        (
                            m["family"],
                            m["ifindex"],
                            str(ip_address(m.get_attr("NDA_DST"))),
                            mac(lladdr) if lladdr is not None else None,
                            m["state"],
                            m["flags"] | ((m.get_attr("NDA_FLAGS_EXT") or 0) << 8),
                            m.get_attr("NDA_PROTOCOL") or 0,
                        )
                    )
        finally:
            ipr.close()
    return out


def test_neighbor_dump_matches_pyroute2_and_iproute2(topo: Topo) -> None:
    installed = install_neighbors(topo)
    sock = topo.open()
    events = sock.dump(codec.RTM_GETNEIGH)
    neighbors = [e.record for e in events if isinstance(e.record, Neighbor)]
    assert len(neighbors) == len(events)
    for n in installed:
        assert n in neighbors
    # AF_UNSPEC dumps the ARP and ND tables, not the bridge FDB.
    assert {n.family for n in neighbors} == {AF_INET, AF_INET6}
    assert {key(n) for n in neighbors} == pyroute2_neighbors(topo.ns.name)

    names = {v: k for k, v in topo.index.items()}
    ours = {(str(n.address), names[n.index], n.lladdr, n.state, n.ext_learned) for n in neighbors}
    theirs = {
        (
            str(e["dst"]),
            str(e["dev"]),
            mac(str(e["lladdr"])) if "lladdr" in e else None,
            sum(NUD_NAMES[s] for s in cast(list[str], e["state"])),
            "extern_learn" in e,
        )
        for e in topo.ip_json("neigh", "show", "nud", "all")
    }
    assert ours == theirs

    v6 = sock.dump(codec.RTM_GETNEIGH, AF_INET6)
    assert {e.record.family for e in v6} == {AF_INET6}  # type: ignore[union-attr]


def test_bridge_fdb_dump(topo: Topo) -> None:
    topo.ns.run("bridge", "fdb", "add", "52:54:00:00:00:30", "dev", "vp0", "master", "static")
    topo.ns.run(
        "bridge", "fdb", "add", "52:54:00:00:00:31", "dev", "vx0", "dst", "198.51.100.7", "self",
        "permanent",
    )  # fmt: skip
    sock = topo.open()
    fdb = [e.record for e in sock.dump(codec.RTM_GETNEIGH, AF_BRIDGE)]
    assert all(isinstance(n, Neighbor) and n.family == AF_BRIDGE for n in fdb)
    by_mac = {(n.lladdr, n.index): n for n in fdb if isinstance(n, Neighbor)}
    port = by_mac[mac("52:54:00:00:00:30"), topo.index["vp0"]]
    assert port.address is None
    # The bridge reports its own entries with NDA_MASTER (NTF_MASTER is a request flag).
    assert port.master == topo.index["br0"] and port.state == NUD_NOARP
    remote = by_mac[mac("52:54:00:00:00:31"), topo.index["vx0"]]
    assert remote.flags & NTF_SELF and remote.address is None


# --- notifications ----------------------------------------------------------------------------


def test_notifications_for_add_change_delete(topo: Topo) -> None:
    events_sock = topo.open(ALL_GROUPS)
    assert events_sock.recv_events() == []  # nothing pending: returns at once
    ns, br0 = topo.ns, topo.index["br0"]
    dst = "192.0.2.40"

    ns.ip("neigh", "replace", dst, "lladdr", "52:54:00:00:00:40", "dev", "br0",
          "nud", "noarp", "extern_learn", "proto", "bgp")  # fmt: skip
    got = collect(events_sock, neighbor_event(Change.NEW, dst), "neighbor add")
    assert neighbors_in(got, dst)[-1] == Neighbor(
        AF_INET, br0, IPv4Address(dst), mac("52:54:00:00:00:40"), NUD_NOARP, NTF_EXT_LEARNED,
        PROTO_BGP,
    )  # fmt: skip

    ns.ip("neigh", "replace", dst, "lladdr", "52:54:00:00:00:41", "dev", "br0", "nud", "noarp")
    new_mac = mac("52:54:00:00:00:41")
    collect(events_sock, neighbor_event(Change.NEW, dst, lladdr=new_mac), "neighbor change")

    # neigh_del() first fails the entry (an RTM_NEWNEIGH in NUD_FAILED), then removes it:
    # the RTM_DELNEIGH carries no NDA_LLADDR, the kernel only sends one for NUD_VALID states.
    # The protocol sticks: a replace without "proto" keeps it (neigh_add() only sets a
    # nonzero one).
    ns.ip("neigh", "del", dst, "dev", "br0")
    got = collect(events_sock, neighbor_event(Change.DEL, dst), "neighbor delete")
    deleted = [e.record for e in got if e.change is Change.DEL]
    assert deleted == [Neighbor(AF_INET, br0, IPv4Address(dst), None, NUD_FAILED, 0, PROTO_BGP)]

    ns.ip("link", "add", "br9", "type", "bridge")
    got = collect(
        events_sock,
        lambda e: e.change is Change.NEW and isinstance(e.record, Link) and e.record.name == "br9",
        "link add",
    )
    br9 = by_name(got)["br9"]
    assert br9.kind == "bridge" and br9.index not in topo.index.values()
    ns.ip("link", "del", "br9")
    collect(
        events_sock,
        lambda e: (
            e.change is Change.DEL and isinstance(e.record, Link) and e.record.index == br9.index
        ),
        "link delete",
    )

    for text, plen in (("198.51.100.1", 24), ("2001:db8:1::1", 64)):
        added = Address(br0, ip_address(text), plen)
        nodad = ["nodad"] if added.family == AF_INET6 else []
        ns.ip("addr", "add", f"{text}/{plen}", "dev", "br0", *nodad)
        collect(events_sock, address_event(Change.NEW, added), f"address add {text}")
        ns.ip("addr", "del", f"{text}/{plen}", "dev", "br0")
        collect(events_sock, address_event(Change.DEL, added), f"address delete {text}")


def test_overrun_raises_and_socket_recovers(topo: Topo) -> None:
    # SO_RCVBUFFORCE 1: the kernel rounds it up to its minimum (SOCK_MIN_RCVBUF, a couple
    # of KiB), room for two or three notifications.
    events_sock = topo.open(codec.RTMGRP_NEIGH, rcvbuf=1)
    count = 3000
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as batch:
        for i in range(count):
            batch.write(
                f"neigh replace 10.{i >> 8}.{i & 0xFF}.1 lladdr 52:54:00:01:{i >> 8:02x}:"
                f"{i & 0xFF:02x} dev br0 nud permanent\n"
            )
    try:
        topo.ns.ip("-batch", batch.name)
    finally:
        os.unlink(batch.name)
    with pytest.raises(NetlinkOverrunError) as info:
        for _ in range(count):  # the error comes before or among the queued notifications
            events_sock.recv_events()
    assert info.value.errno == errno.ENOBUFS
    # The error is reported once; the socket keeps working, and a re-dump sees everything.
    events_sock.recv_events()
    topo.ns.ip("neigh", "replace", "10.200.0.1", "lladdr", "52:54:00:02:00:01", "dev", "br0")
    collect(events_sock, neighbor_event(Change.NEW, "10.200.0.1"), "a notification after it")
    dumped = topo.open().dump(codec.RTM_GETNEIGH, AF_INET)
    tens = [
        n for e in dumped if isinstance(n := e.record, Neighbor) and str(n.address)[:3] == "10."
    ]
    assert len(tens) == count + 1


# --- requests ---------------------------------------------------------------------------------


def test_neigh_replace_and_delete(topo: Topo) -> None:
    sock, br0 = topo.open(), topo.index["br0"]
    sock.neigh_replace(br0, IPv4Address("192.0.2.30"), mac("52:54:00:00:00:30"), NUD_NOARP,
                       NTF_EXT_LEARNED, PROTO_BGP)  # fmt: skip
    assert topo.neigh_json("192.0.2.30") == {
        "dst": "192.0.2.30",
        "lladdr": "52:54:00:00:00:30",
        "extern_learn": None,
        "state": ["NOARP"],
        "protocol": "bgp",
    }
    # Replace really replaces (NLM_F_REPLACE): new MAC, state and flags.
    sock.neigh_replace(br0, "192.0.2.30", mac("52:54:00:00:00:31"), NUD_PERMANENT)
    entry = topo.neigh_json("192.0.2.30")
    assert entry is not None
    assert (entry["lladdr"], entry["state"]) == ("52:54:00:00:00:31", ["PERMANENT"])
    sock.neigh_replace(br0, "2001:db8::30", mac("52:54:00:00:00:32"), NUD_NOARP)
    entry = topo.neigh_json("2001:db8::30")
    assert entry is not None and entry["lladdr"] == "52:54:00:00:00:32"

    sock.neigh_delete(br0, "192.0.2.30")
    sock.neigh_delete(br0, IPv6Address("2001:db8::30"))
    assert topo.neigh_json("192.0.2.30") is None
    assert topo.neigh_json("2001:db8::30") is None


def test_neigh_use_lets_the_kernel_resolve(topo: Topo) -> None:
    sock, br0 = topo.open(), topo.index["br0"]
    events_sock = topo.open(codec.RTMGRP_NEIGH)
    peer_mac = topo.peer.mac("eth0")

    # Nobody owns 192.0.2.99: NTF_USE creates the entry (NLM_F_CREATE) INCOMPLETE, with no
    # MAC, while the kernel probes (3 x 100 ms here), then the kernel fails it by itself.
    sock.neigh_use(br0, "192.0.2.99")
    entry = topo.neigh_json("192.0.2.99")
    assert entry is not None and entry["state"] == ["INCOMPLETE"] and "lladdr" not in entry
    got = collect(
        events_sock, neighbor_event(Change.NEW, "192.0.2.99", state=NUD_FAILED), "ARP failure"
    )
    assert all(n.lladdr is None for n in neighbors_in(got, "192.0.2.99"))

    # The peer answers: the kernel's own ARP request / Neighbor Solicitation resolves it.
    for dst in ("192.0.2.20", "2001:db8::20"):
        sock.neigh_use(br0, dst)
        collect(
            events_sock,
            neighbor_event(Change.NEW, dst, state=NUD_REACHABLE, lladdr=peer_mac, index=br0),
            f"{dst} to resolve",
        )
        entry = topo.neigh_json(dst)
        assert entry is not None and entry["lladdr"] == ":".join(f"{b:02x}" for b in peer_mac)


def test_request_errors(topo: Topo) -> None:
    sock, br0 = topo.open(), topo.index["br0"]
    with pytest.raises(NetlinkError) as info:
        sock.neigh_delete(br0, "192.0.2.123")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(NetlinkError) as info:
        sock.neigh_replace(9999, "192.0.2.123", mac("52:54:00:00:00:01"), NUD_NOARP)
    assert info.value.errno == errno.ENODEV
    # The socket stays usable after an error.
    sock.neigh_replace(br0, "192.0.2.123", mac("52:54:00:00:00:01"), NUD_NOARP)
    sock.neigh_delete(br0, "192.0.2.123")


# --- socket logic against scripted kernel replies ---------------------------------------------


def scripted(sock: RtnlSocket, reply: Callable[[int, int], bytes]) -> list[bytes]:
    """Replace the socket's kernel: each request gets `reply(seq, attempt)` back."""
    sent: list[bytes] = []

    def send(msg: bytes) -> None:
        sent.append(msg)

    def recv(block: bool) -> bytes | None:
        seq: int = struct.unpack_from("=I", sent[-1], 8)[0]  # nlmsg_seq of the request
        return reply(seq, len(sent))

    sock._send = send  # type: ignore[method-assign]
    sock._recv = recv  # type: ignore[method-assign]
    return sent


def done(seq: int, flags: int = codec.NLM_F_MULTI, error: int = 0) -> bytes:
    return struct.pack("=IHHIIi", 20, codec.NLMSG_DONE, flags, seq, 0, error)


def test_dump_retries_an_interrupted_dump() -> None:
    link = Link(5, "x0", kind="bridge")
    sock = RtnlSocket()
    try:

        def reply(seq: int, attempt: int) -> bytes:
            # The kernel flags every message after the change, NLMSG_DONE included.
            intr = codec.NLM_F_DUMP_INTR if attempt < 3 else 0
            stale = codec.encode(Link(9, "old"), codec.RTM_NEWLINK, codec.NLM_F_MULTI, seq - 1)
            entry = codec.encode(link, codec.RTM_NEWLINK, codec.NLM_F_MULTI | intr, seq)
            return stale + entry + done(seq, codec.NLM_F_MULTI | intr)

        sent = scripted(sock, reply)
        assert sock.dump(codec.RTM_GETLINK) == [Event(Change.NEW, link)]
        assert len(sent) == 3  # two interrupted dumps, then a clean one
        seqs = [struct.unpack_from("=I", m, 8)[0] for m in sent]
        assert len(set(seqs)) == 3

        sent.clear()
        with pytest.raises(NetlinkError) as info:
            sock.dump(codec.RTM_GETLINK, attempts=2)
        assert info.value.errno == errno.EINTR
    finally:
        sock.close()


def test_dump_reports_kernel_errors() -> None:
    sock = RtnlSocket()
    try:
        scripted(sock, lambda seq, _n: done(seq, error=-errno.EMSGSIZE))
        with pytest.raises(NetlinkError) as info:
            sock.dump(codec.RTM_GETNEIGH)
        assert info.value.errno == errno.EMSGSIZE

        def error(seq: int, _n: int) -> bytes:
            body = (
                struct.pack("=i", -errno.EOPNOTSUPP)
                + codec.dump_request(codec.RTM_GETNEIGH, seq=seq)[:16]
            )
            hdr = struct.pack(
                "=IHHII", 16 + len(body), codec.NLMSG_ERROR, codec.NLM_F_CAPPED, seq, 0
            )
            return hdr + body

        scripted(sock, error)
        with pytest.raises(NetlinkError) as info:
            sock.dump(codec.RTM_GETNEIGH)
        assert info.value.errno == errno.EOPNOTSUPP
    finally:
        sock.close()
