"""VLAN-aware bridges: the codec, the mirror and domain resolution.

Two sources of netlink messages: ones built with the codec's encoders (a
Cumulus-style leaf below), and ones a real kernel sent (Debian 12's 6.1, in
QEMU: tests/unit/data/*.hex, captured by tests/unit/data/capture_bridge_vlans.py).
"""

from __future__ import annotations

import struct
from ipaddress import ip_address
from pathlib import Path

import pytest

from rarp_replay import control
from rarp_replay.config import Settings
from rarp_replay.domain import DEFAULT_FABRIC_PORTS, Domain, GlobSet, Ignored, resolve
from rarp_replay.domain import source_address as source_address_of
from rarp_replay.engine import Engine, Resolve, SendFrame
from rarp_replay.errors import NetlinkError
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.mirror import Mirror
from rarp_replay.netlink import codec as c
from rarp_replay.netlink.records import (
    AF_BRIDGE,
    AF_INET,
    BRIDGE_VLAN_INFO_PVID,
    BRIDGE_VLAN_INFO_UNTAGGED,
    FDB_NOTIFY_BIT,
    FDB_NOTIFY_INACTIVE_BIT,
    NTF_EXT_LEARNED,
    NUD_NOARP,
    NUD_REACHABLE,
    Address,
    BridgePort,
    BridgeVlan,
    Change,
    Event,
    Link,
    Neighbor,
    VlanTunnel,
)

DATA = Path(__file__).parent / "data"
SVI_MAC = bytes.fromhex("020000000001")
VRR_MAC = bytes.fromhex("00005e000101")
VM_MAC = bytes.fromhex("525400000010")
PU = BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED

# ifindexes of the Cumulus-style leaf
BR, SWP1, SWP2, BOND, SWP3, VX, VLAN10, VLAN20, V0, PEER, SWP49, VLAN4001 = range(1, 13)


def port(index: int, name: str, **kw: object) -> Link:
    return Link(index, name, 1, bytes(5) + bytes([index]), **kw)  # type: ignore[arg-type]


def leaf_records() -> list[Link | BridgePort | Address]:
    return [
        Link(BR, "br_default", 1, SVI_MAC, "bridge", vlan_filtering=True),
        port(SWP1, "swp1", kind="veth", slave_kind="bridge", master=BR),
        port(SWP2, "swp2", kind="veth", slave_kind="bridge", master=BR),
        port(BOND, "bond1", kind="bond", slave_kind="bridge", master=BR),
        port(SWP3, "swp3", kind="veth", slave_kind="bond", master=BOND),
        port(VX, "vxlan48", kind="vxlan", slave_kind="bridge", master=BR),
        Link(VLAN10, "vlan10", 1, SVI_MAC, "vlan", lower=BR, vlan_id=10),
        Link(VLAN20, "vlan20", 1, SVI_MAC, "vlan", lower=BR, vlan_id=20),
        Link(V0, "vlan10-v0", 1, VRR_MAC, "macvlan", lower=VLAN10),
        port(PEER, "peerlink", kind="bond", slave_kind="bridge", master=BR),
        port(SWP49, "swp49", kind="veth", slave_kind="bond", master=PEER),
        Link(VLAN4001, "vlan4001_l3", 1, SVI_MAC, "vlan", lower=BR, vlan_id=4001),
        # The bridge itself, as 6.1 reports it: its own index as master, no BRENTRY flag.
        BridgePort(
            BR,
            "br_default",
            BR,
            (BridgeVlan(1, 1, PU), BridgeVlan(10, 10), BridgeVlan(20, 20), BridgeVlan(4001, 4001)),
        ),
        BridgePort(SWP1, "swp1", BR, (BridgeVlan(10, 10, PU),)),
        BridgePort(SWP2, "swp2", BR, (BridgeVlan(20, 20),)),
        BridgePort(BOND, "bond1", BR, (BridgeVlan(10, 10, PU),)),
        BridgePort(PEER, "peerlink", BR, (BridgeVlan(10, 20),)),
        BridgePort(
            VX,
            "vxlan48",
            BR,
            (BridgeVlan(10, 10), BridgeVlan(20, 21), BridgeVlan(4001, 4001)),
            (VlanTunnel(10, 10, 10010), VlanTunnel(20, 21, 10020), VlanTunnel(4001, 4001, 104001)),
        ),
        Address(VLAN10, ip_address("10.0.10.2"), 24),
        Address(V0, ip_address("10.0.10.1"), 24),
        Address(VLAN20, ip_address("10.0.20.2"), 24),
    ]


def through_the_wire(record: Link | BridgePort | Address, change: Change = Change.NEW) -> Event:
    """The event the daemon would read for `record`: encoded, then decoded."""
    [(mtype, _flags, _seq, body)] = c.iter_messages(c.encode(Event(change, record)))
    event = c.decode(mtype, body)
    assert event is not None
    return event


def leaf() -> Mirror:
    events = [through_the_wire(r) for r in leaf_records()]
    m = Mirror()
    m.reset(
        [e for e in events if not isinstance(e.record, Address)],
        [e for e in events if isinstance(e.record, Address)],
        [],
        now=0.0,
    )
    return m


def where(m: Mirror, ifindex: int, vid: int | None) -> Domain | Ignored:
    return resolve(m, ifindex, vid, fabric_ports=GlobSet(DEFAULT_FABRIC_PORTS))


# --- codec ---------------------------------------------------------------------------------


def test_vlan_ranges_and_tunnels_on_the_wire() -> None:
    rec = BridgePort(VX, "vxlan48", BR, (BridgeVlan(20, 29, 0),), (VlanTunnel(20, 29, 10020),))
    wire = c.encode(rec)
    [(_t, _f, _s, body)] = c.iter_messages(wire)
    attrs = c.parse_attrs(body, 16)
    spec = c.parse_attrs(bytes(attrs[c.IFLA_AF_SPEC]))
    assert body[0] == AF_BRIDGE
    # a range is two entries, RANGE_BEGIN then RANGE_END (parse_attrs keeps the last)
    assert struct.unpack("=HH", spec[c.IFLA_BRIDGE_VLAN_INFO]) == (0x10, 29)


@pytest.mark.parametrize(
    "entries",
    [
        [(0x10, 20)],  # range end without begin
        [(0x08, 20)],  # range begins, never ends
        [(0x08, 20), (0x10, 10)],  # end below begin
        [(0x08, 20), (0, 21)],  # single VID inside an open range
        [(0, 0)],  # VID 0
        [(0, 4095)],  # reserved VID
    ],
)
def test_malformed_vlan_lists_raise_netlink_error(entries: list[tuple[int, int]]) -> None:
    spec = b"".join(c._nlattr(c.IFLA_BRIDGE_VLAN_INFO, struct.pack("=HH", *e)) for e in entries)
    body = struct.pack("=BxHiII", AF_BRIDGE, 0, 3, 0, 0) + c._nlattr(c.IFLA_AF_SPEC, spec)
    with pytest.raises(NetlinkError):
        c.decode(c.RTM_NEWLINK, body)
    short = struct.pack("=BxHiII", AF_BRIDGE, 0, 3, 0, 0) + c._nlattr(
        c.IFLA_AF_SPEC, c._nlattr(c.IFLA_BRIDGE_VLAN_INFO, b"\0\0")
    )
    with pytest.raises(NetlinkError):
        c.decode(c.RTM_NEWLINK, short)


def test_tunnel_range_must_map_as_many_vnis_as_vlans() -> None:
    def tinfo(vni: int, vid: int, flags: int) -> bytes:
        inner = c._nlattr(c.IFLA_BRIDGE_VLAN_TUNNEL_ID, struct.pack("=I", vni))
        inner += c._nlattr(c.IFLA_BRIDGE_VLAN_TUNNEL_VID, struct.pack("=H", vid))
        inner += c._nlattr(c.IFLA_BRIDGE_VLAN_TUNNEL_FLAGS, struct.pack("=H", flags))
        return c._nlattr(c.IFLA_BRIDGE_VLAN_TUNNEL_INFO, inner)

    head = struct.pack("=BxHiII", AF_BRIDGE, 0, 3, 0, 0)
    bad = head + c._nlattr(c.IFLA_AF_SPEC, tinfo(100, 10, 0x08) + tinfo(105, 12, 0x10))
    with pytest.raises(NetlinkError):
        c.decode(c.RTM_NEWLINK, bad)
    good = head + c._nlattr(c.IFLA_AF_SPEC, tinfo(100, 10, 0x08) + tinfo(102, 12, 0x10))
    event = c.decode(c.RTM_NEWLINK, good)
    assert event is not None and event.record == BridgePort(
        3, "", None, (), (VlanTunnel(10, 12, 100),)
    )


def test_dump_request_asks_for_compressed_vlans() -> None:
    wire = c.dump_request(c.RTM_GETLINK, AF_BRIDGE, 7, ext_mask=c.RTEXT_FILTER_BRVLAN_COMPRESSED)
    [(_t, _f, seq, body)] = c.iter_messages(wire)
    assert seq == 7 and body[0] == AF_BRIDGE
    assert c.parse_attrs(body, 16)[c.IFLA_EXT_MASK] == struct.pack("=I", 4)
    with pytest.raises(NetlinkError, match="IFLA_EXT_MASK"):
        c.dump_request(c.RTM_GETNEIGH, AF_BRIDGE, ext_mask=4)


# --- mirror and resolution on the codec-built leaf -----------------------------------------


def test_mirror_holds_vlan_state() -> None:
    m = leaf()
    assert m.vlan_filtering(BR) and not m.vlan_filtering(SWP1)
    assert m.bridge_ports[SWP1].pvid == 10 and m.bridge_ports[SWP2].pvid is None
    assert m.bridge_ports[SWP2].vlan_flags(20) == 0 and m.bridge_ports[SWP2].vlan_flags(10) is None
    assert (m.vni(BR, 10), m.vni(BR, 21), m.vni(BR, 4001), m.vni(BR, 30)) == (
        10010,
        10021,
        104001,
        None,
    )


@pytest.mark.parametrize("vid", [None, 0])
def test_untagged_and_priority_tagged_belong_to_the_pvid(vid: int | None) -> None:
    d = where(leaf(), SWP1, vid)
    assert isinstance(d, Domain)
    assert d.key == (BR, 10) and d.name == "vlan10" and d.port == SWP1
    assert d.l3 == (VLAN10, V0) and d.egress == VLAN10 and d.tag is None
    assert d.egress_mac == SVI_MAC
    assert d.vni == 10010  # vxlan48's VLAN tunnel info: for logs, not for resolution


def test_tagged_frame_on_a_member_trunk() -> None:
    d = where(leaf(), SWP2, 20)
    assert isinstance(d, Domain)
    assert (d.key, d.l3, d.egress, d.tag) == ((BR, 20), (VLAN20,), VLAN20, None)
    assert d.vni == 10020


@pytest.mark.parametrize(
    ("ifindex", "vid"),
    [
        (SWP2, 10),  # the trunk does not carry VLAN 10
        (SWP2, None),  # nor untagged frames: no PVID
        (SWP1, 20),
        (SWP2, 4001),  # the L3VNI's VLAN: no local port carries it
    ],
)
def test_frames_the_bridge_drops_are_not_members(ifindex: int, vid: int | None) -> None:
    d = where(leaf(), ifindex, vid)
    assert isinstance(d, Ignored) and d.reason == "vlan-not-member"


@pytest.mark.parametrize(
    ("ifindex", "vid", "reason"),
    [
        (VLAN10, None, "bridge-copy"),  # after the bridge, untagged by the 802.1Q device
        (VLAN20, None, "bridge-copy"),
        (BR, 10, "bridge-copy"),
        (BR, None, "bridge-copy"),
        (V0, None, "stacked-copy"),
        (SWP3, None, "aggregate-member-copy"),
        (VX, 10, "fabric-port"),
        (PEER, 10, "fabric-port"),  # peerlink*: the default fabric-ports glob
        (SWP49, 10, "fabric-port"),  # a member of the peer link
    ],
)
def test_copies_and_fabric(ifindex: int, vid: int | None, reason: str) -> None:
    d = where(leaf(), ifindex, vid)
    assert isinstance(d, Ignored) and d.reason == reason, d


def test_every_copy_of_one_frame_is_one_domain() -> None:
    # An untagged RARP on the bond, as the taps see it: member, bond, bridge, SVI, macvlan.
    m = leaf()
    seen = [(SWP3, None), (BOND, None), (BR, 10), (VLAN10, None), (V0, None)]
    domains = [d for d in (where(m, i, v) for i, v in seen) if isinstance(d, Domain)]
    assert [(d.key, d.port) for d in domains] == [((BR, 10), BOND)]


def test_follows_a_vlan_added_to_a_port() -> None:
    m = leaf()
    assert isinstance(where(m, SWP2, 10), Ignored)
    gen = m.generation
    m.apply(
        through_the_wire(BridgePort(SWP2, "swp2", BR, (BridgeVlan(10, 10), BridgeVlan(20, 20)))),
        1.0,
    )
    assert m.generation > gen  # cached resolutions are dropped
    d = where(m, SWP2, 10)
    assert isinstance(d, Domain) and d.key == (BR, 10) and d.egress == VLAN10
    # The port leaves the bridge (AF_BRIDGE RTM_DELLINK): its VLANs are gone, the link is not.
    m.apply(through_the_wire(BridgePort(SWP2, "swp2", BR), Change.DEL), 2.0)
    assert SWP2 in m.links and SWP2 not in m.bridge_ports
    d2 = where(m, SWP2, 20)
    assert isinstance(d2, Ignored) and d2.reason == "vlan-not-member"


def test_vlan_without_svi_probes_from_the_bridge_tagged() -> None:
    m = leaf()
    m.apply(through_the_wire(BridgePort(SWP2, "swp2", BR, (BridgeVlan(30, 30),))), 1.0)
    d = where(m, SWP2, 30)
    assert isinstance(d, Domain)
    assert (d.key, d.egress, d.tag, d.name) == ((BR, 30), BR, 30, "br_default/vlan30")
    assert d.vni is None  # no VXLAN port maps VLAN 30
    # The bridge's own untagged PVID VLAN: the bridge device is the L3 interface, untagged.
    m.apply(through_the_wire(BridgePort(SWP2, "swp2", BR, (BridgeVlan(1, 1),))), 2.0)
    d1 = where(m, SWP2, 1)
    assert isinstance(d1, Domain) and (d1.egress, d1.tag, d1.name) == (BR, None, "br_default")


def test_traditional_bridge_is_unchanged_by_vlan_state() -> None:
    # vlan_filtering 0: the kernel keeps VLAN lists, but the bridge ignores them.
    m = leaf()
    m.apply(
        through_the_wire(Link(BR, "br_default", 1, SVI_MAC, "bridge", vlan_filtering=False)), 1.0
    )
    d = where(m, SWP2, 10)
    assert isinstance(d, Domain) and d.key == (BR, 10) and d.egress == VLAN10
    d0 = where(m, SWP1, None)
    assert isinstance(d0, Domain) and d0.key == (BR, 0) and d0.egress == BR
    assert d.vni is None and d0.vni is None  # the bridge maps no VLAN to a VNI then


def test_probe_source_is_the_svi_address_else_the_anycast_one() -> None:
    m = leaf()
    d = where(m, SWP1, None)
    assert isinstance(d, Domain)
    assert source_address_of(m, d, ip_address("10.0.10.50")) == ip_address("10.0.10.2")
    m.apply(Event(Change.DEL, Address(VLAN10, ip_address("10.0.10.2"), 24)), 1.0)
    assert source_address_of(m, d, ip_address("10.0.10.50")) == ip_address("10.0.10.1")
    m.apply(Event(Change.DEL, Address(V0, ip_address("10.0.10.1"), 24)), 2.0)
    assert source_address_of(m, d, ip_address("10.0.10.50")) is None  # never 0.0.0.0


def test_bindings_read_from_the_macvlan_are_written_on_the_svi() -> None:
    # A local host's entry seen only on the anycast macvlan: the probe leaves through
    # the SVI (the bridge tags it for the port) and the resolve is written on the SVI.
    m = leaf()
    n = Neighbor(AF_INET, V0, ip_address("10.0.10.50"), VM_MAC, NUD_REACHABLE)
    m.apply(Event(Change.NEW, n), 0.0)
    actions = Engine(m).on_frame(rarp_request_frame(VM_MAC), SWP1, None, now=1.0)
    [probe] = [a for a in actions if isinstance(a, SendFrame)]
    assert probe.egress == VLAN10 and probe.source == ip_address("10.0.10.2")
    assert Resolve(VLAN10, ip_address("10.0.10.50")) in actions
    assert not [a for a in actions if getattr(a, "ifindex", None) == V0]


def fdb_event(port: int, vid: int, **kw: object) -> Event:
    """A bridge FDB notification for VM_MAC, through the codec as the daemon reads it."""
    n = Neighbor(AF_BRIDGE, port, None, VM_MAC, master=BR, vlan=vid, **kw)  # type: ignore[arg-type]
    [(mtype, _flags, _seq, body)] = c.iter_messages(c.encode(Event(Change.NEW, n)))
    event = c.decode(mtype, body)
    assert event is not None
    return event


def remote_vm(m: Mirror, svi: int, ip: str) -> None:
    n = Neighbor(AF_INET, svi, ip_address(ip), VM_MAC, NUD_NOARP, NTF_EXT_LEARNED, 186)
    m.apply(Event(Change.NEW, n), 0.0)


def test_fdb_move_written_as_extern_learn_triggers_in_the_entry_vlan() -> None:
    # SONiC's fdbsyncd: `bridge fdb replace MAC dev EthernetN master dynamic extern_learn
    # vlan V` after the ASIC learned it. Local by its port, as zebra classifies it.
    m = leaf()
    remote_vm(m, VLAN20, "10.0.20.50")
    eng = Engine(m)
    assert eng.on_event(fdb_event(VX, 20, state=NUD_REACHABLE, flags=NTF_EXT_LEARNED), 0.0) == []
    acts = eng.on_event(fdb_event(SWP2, 20, state=NUD_REACHABLE, flags=NTF_EXT_LEARNED), 1.0)
    [probe] = [a for a in acts if isinstance(a, SendFrame)]
    assert probe.egress == VLAN20 and probe.target == ip_address("10.0.20.50")
    [ann] = [a for a in acts if getattr(a, "event", None) == "announcement"]
    assert ann.fields["domain"] == "vlan20" and ann.fields["moved_from"] == "vxlan48"
    assert ann.fields["vni"] == 10020
    # Moving back to the fabric (the VM left again) starts nothing, logs nothing.
    assert eng.on_event(fdb_event(VX, 20, state=NUD_REACHABLE, flags=NTF_EXT_LEARNED), 9.0) == []
    assert eng.stats["fdb-moves"] == 1


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"state": NUD_NOARP}, "static: an operator's, or zebra's multihoming sync entry"),
        (
            {"state": NUD_REACHABLE, "notify": FDB_NOTIFY_BIT},
            "activity-notify: written by zebra for an Ethernet-segment peer",
        ),
        (
            {"state": NUD_REACHABLE, "notify": FDB_NOTIFY_BIT | FDB_NOTIFY_INACTIVE_BIT},
            "zebra's entry, marked inactive",
        ),
    ],
)
def test_fdb_entries_zebra_writes_on_a_local_bond_do_not_trigger(
    kw: dict[str, int], why: str
) -> None:
    m = leaf()
    remote_vm(m, VLAN10, "10.0.10.50")
    eng = Engine(m)
    eng.on_event(fdb_event(VX, 10, state=NUD_REACHABLE, flags=NTF_EXT_LEARNED), 0.0)
    assert eng.on_event(fdb_event(BOND, 10, flags=NTF_EXT_LEARNED, **kw), 1.0) == [], why
    assert eng.stats["fdb-moves"] == 0 and eng.stats["rounds"] == 0


def test_fdb_move_in_a_vlan_the_port_does_not_carry_is_dropped() -> None:
    m = leaf()
    remote_vm(m, VLAN20, "10.0.20.50")
    eng = Engine(m)
    eng.on_event(fdb_event(VX, 20, state=NUD_REACHABLE, flags=NTF_EXT_LEARNED), 0.0)
    acts = eng.on_event(fdb_event(SWP1, 20, state=NUD_REACHABLE), 1.0)
    assert not [a for a in acts if isinstance(a, SendFrame)]
    assert eng.stats["dropped.vlan-not-member"] == 1


# --- what a real kernel sent ---------------------------------------------------------------


def fixture(name: str) -> list[Event]:
    events = []
    for line in (DATA / name).read_text().split():
        for mtype, _flags, _seq, body in c.iter_messages(bytes.fromhex(line)):
            ev = c.decode(mtype, body)
            if ev is not None:
                events.append(ev)
    return events


def real_leaf() -> tuple[Mirror, dict[str, int]]:
    links = fixture("links.hex")
    ports = fixture("bridge_vlans.hex")
    m = Mirror()
    m.reset(links + ports, [], [], now=0.0)
    return m, {link.name: link.index for link in m.links.values()}


def test_real_kernel_links() -> None:
    m, ix = real_leaf()
    links = m.links
    assert links[ix["br0"]].kind == "bridge" and links[ix["br0"]].vlan_filtering is True
    v10 = links[ix["vlan10"]]
    assert (v10.kind, v10.vlan_id, v10.lower) == ("vlan", 10, ix["br0"])
    v0 = links[ix["vlan10-v0"]]
    assert (v0.kind, v0.lower, v0.mac) == ("macvlan", ix["vlan10"], VRR_MAC)
    swp3 = links[ix["swp3"]]
    assert (swp3.master, swp3.slave_kind) == (ix["bond1"], "bond")
    assert links[ix["bond1"]].master == ix["br0"] and links[ix["bond1"]].kind == "bond"
    assert links[ix["vxlan48"]].kind == "vxlan"


def test_real_kernel_bridge_vlans() -> None:
    m, ix = real_leaf()
    ports = m.bridge_ports
    assert ports[ix["swp1"]].vlans == (BridgeVlan(10, 10, PU),)
    assert ports[ix["swp1"]].master == ix["br0"]
    assert ports[ix["swp2"]].vlans == (BridgeVlan(20, 20, 0),)
    assert ports[ix["bond1"]].pvid == 10
    assert ix["swp3"] not in ports  # a bond member is not a bridge port
    vx = ports[ix["vxlan48"]]
    assert vx.tunnels == (VlanTunnel(10, 10, 10010), VlanTunnel(20, 21, 10020))
    assert m.vni(ix["br0"], 21) == 10021
    own = ports[ix["br0"]]  # the bridge itself (its own master), with its default PVID 1
    assert own.master == ix["br0"] and own.pvid == 1
    assert own.vlan_flags(10) is not None and own.vlan_flags(20) is not None


def test_real_kernel_resolution() -> None:
    m, ix = real_leaf()
    d = where(m, ix["swp1"], None)
    assert isinstance(d, Domain)
    assert d.key == (ix["br0"], 10) and d.l3 == (ix["vlan10"], ix["vlan10-v0"])
    t = where(m, ix["swp2"], 20)
    assert isinstance(t, Domain) and t.key == (ix["br0"], 20) and t.egress == ix["vlan20"]
    assert (d.vni, t.vni) == (10010, 10020)
    for name, vid, reason in (
        ("swp2", 10, "vlan-not-member"),
        ("vlan10", None, "bridge-copy"),
        ("vlan10-v0", None, "stacked-copy"),
        ("swp3", None, "aggregate-member-copy"),
        ("vxlan48", 10, "fabric-port"),
    ):
        got = where(m, ix[name], vid)
        assert isinstance(got, Ignored) and got.reason == reason, (name, got)


def test_real_kernel_notification_carries_the_vlan_list() -> None:
    # `bridge vlan add dev swp2 vid 30`: br_setlink -> br_ifinfo_notify, whose filter is
    # RTEXT_FILTER_BRVLAN_COMPRESSED: the port's whole VLAN list arrives on RTNLGRP_LINK.
    m, ix = real_leaf()
    notes = [e for e in fixture("notify_vlan_add.hex") if isinstance(e.record, BridgePort)]
    assert notes, "no AF_BRIDGE notification"
    for ev in notes:
        m.apply(ev, 1.0)
    swp2 = m.bridge_ports[ix["swp2"]]
    assert swp2.vlan_flags(30) == 0 and swp2.vlan_flags(20) == 0
    d = where(m, ix["swp2"], 30)
    assert isinstance(d, Domain) and d.key == (ix["br0"], 30)


def test_fixture_kernel_is_recorded() -> None:
    assert (DATA / "uname.txt").read_text().startswith("6.1.")


def test_vni_is_in_the_announcement_and_rarp_replyctl() -> None:
    # The VLAN's VNI (vxlan48's tunnel info) is shown wherever the round's domain is; a
    # domain without one (VLAN 30 below, a traditional bridge) has no `vni` key at all.
    m = leaf()
    remote_vm(m, VLAN10, "10.0.10.50")
    m.apply(fdb_event(SWP1, 10, state=NUD_REACHABLE), 0.5)
    eng, hist = Engine(m), control.History()
    acts = eng.on_frame(rarp_request_frame(VM_MAC), SWP1, None, now=1.0)
    [ann] = [a for a in acts if getattr(a, "event", None) == "announcement"]
    assert list(ann.fields)[:3] == ["mac", "domain", "vni"] and ann.fields["vni"] == 10010
    hist.feed(acts, 1.0)
    s = control.State(eng, m, hist, "9.9", 1, 0.0, None, Settings().as_dict(), None)
    [r] = control.handle(b"rounds\n", s, 1.5)["rounds"]
    assert (r["domain"], r["vni"]) == ("vlan10", 10010)
    assert "52:54:00:00:00:10 vlan10 vni=10010 trigger=rarp" in control.render(
        control.handle(b"rounds\n", s, 1.5)
    )
    doc = control.handle(b"show 52:54:00:00:00:10\n", s, 2.0)
    [mac] = doc["macs"]
    [fdb] = mac["fdb"]
    assert (fdb["port"], fdb["domain"], fdb["vni"]) == ("swp1", "vlan10", 10010)
    [h] = mac["history"]
    assert (h["domain"], h["vni"]) == ("vlan10", 10010)
    text = control.render(doc)
    assert "port swp1 (domain vlan10 vni 10010)" in text and "(vlan10 vni 10010)" in text
    # VLAN 30 has no SVI and no tunnel: no `vni` anywhere.
    m.apply(through_the_wire(BridgePort(SWP2, "swp2", BR, (BridgeVlan(30, 30),))), 3.0)
    acts = eng.on_frame(rarp_request_frame(VM_MAC, vid=30), SWP2, 30, now=3.0)
    assert all("vni" not in a.fields for a in acts if getattr(a, "event", None) == "announcement")
