"""The decision logic, driven with plain records and frames: no sockets.

Last: the operator's settings in the engine (port globs, reconfiguring a live engine)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.engine import (
    Config,
    Engine,
    Log,
    RemovePlaceholder,
    Resolve,
    SendFrame,
    Takeover,
)
from rarp_replay.frames.arp import ArpPacket, rarp_request_frame
from rarp_replay.frames.ethernet import ETH_P_RARP, EthernetFrame
from rarp_replay.macaddr import format_mac
from rarp_replay.netlink.records import (
    AF_BRIDGE,
    AF_INET,
    NTF_EXT_LEARNED,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
    Address,
    Link,
    Neighbor,
)
from rarp_replay.ratelimit import Rate
from tests.support.topology import (
    BR,
    MACVLAN,
    OTHER_MAC,
    PORT,
    PORT2,
    SVI_MAC,
    TRUNK_V10,
    VM_MAC,
    VX,
    gone,
    local,
    new,
    remote,
    switch,
)

VM = format_mac(VM_MAC)
SVI = format_mac(SVI_MAC)
# Make-before-break (`takeover-delay` 0, not the default): for the tests whose visible
# result is the takeover itself, at the VM's first answer. The held takeover (the
# default) is tests/unit/test_engine_takeover_delay.py's.
MBB = Config(takeover_delay=0.0)


def sends(actions: list) -> list[SendFrame]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, SendFrame)]


def logs(actions: list, event: str) -> list[Log]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, Log) and a.event == event]


def rarp(mac: bytes = VM_MAC, vid: int | None = None) -> bytes:
    return rarp_request_frame(mac, vid=vid)


def test_rarp_probes_every_address_with_correct_frames() -> None:
    eng = Engine(switch(remote("192.0.2.10"), remote("198.51.100.10"), remote("2001:db8:100::10")))
    actions = eng.on_frame(rarp(), PORT, None, now=1.0)
    out = sends(actions)
    assert {str(s.target) for s in out} == {"192.0.2.10", "198.51.100.10", "2001:db8:100::10"}
    for s in out:
        assert s.egress == BR
        pkt = Ether(s.frame)
        assert pkt.dst == VM and pkt.src == SVI
        if s.family == 4:
            arp = pkt[ARP]
            assert arp.op == 1 and arp.hwsrc == SVI and arp.hwdst == VM
            assert arp.pdst == str(s.target)
            expected_src = "192.0.2.252" if arp.pdst.startswith("192.") else "198.51.100.252"
            assert arp.psrc == expected_src != "0.0.0.0"
        else:
            ip6 = pkt[IPv6]
            # Solicited-node destination, so the VM's NA carries its link-layer address.
            assert ip6.hlim == 255 and ip6.dst == "ff02::1:ff00:10"
            assert ip6.src == "2001:db8:100::252"
            assert pkt[ICMPv6ND_NS].tgt == "2001:db8:100::10"
            assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == SVI
            chk = pkt[ICMPv6ND_NS].cksum
            del pkt[ICMPv6ND_NS].cksum
            assert Ether(bytes(pkt))[ICMPv6ND_NS].cksum == chk
    [line] = logs(actions, "announcement")
    assert line.fields["mac"] == VM and line.fields["port"] == "swp1"
    assert line.fields["domain"] == "br100" and line.fields["probes"] == 3


def test_qemu_burst_gives_one_round() -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    total = []
    for t in (0.0, 0.05, 0.2, 0.45, 0.8):
        total += sends(eng.on_frame(rarp(), PORT, None, now=t))
        # The same frame also seen on the bridge and the macvlan: copies.
        total += sends(eng.on_frame(rarp(), BR, None, now=t))
        total += sends(eng.on_frame(rarp(), MACVLAN, None, now=t))
    assert len(total) == 1
    assert eng.stats["dropped.duplicate"] == 4
    assert eng.stats["dropped.bridge-copy"] == 5


def test_new_round_after_holddown() -> None:
    eng = Engine(switch(local("192.0.2.10", state=NUD_STALE)), Config(holddown=5.0))
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=0.0))) == 1
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=4.9))) == 0
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=5.1))) == 1


def test_rarp_from_fabric_never_probes() -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    actions = eng.on_frame(rarp(), VX, None, now=0.0)
    assert sends(actions) == [] and eng.stats["dropped.fabric-port"] == 1
    assert logs(actions, "dropped")[0].fields["reason"] == "fabric-port"


def test_unknown_mac_then_known_mac_still_served() -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    actions = eng.on_frame(rarp(OTHER_MAC), PORT, None, now=0.0)
    assert sends(actions) == []
    assert logs(actions, "announcement")[0].fields["result"] == "unknown-mac"
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=0.1))) == 1


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "malformed"),
        (b"\xff" * 13, "malformed"),
        (rarp()[:20], "malformed"),
        (EthernetFrame(b"\xff" * 6, VM_MAC, 0x0800, bytes(46)).build(), "not-rarp"),
        (
            EthernetFrame(
                b"\xff" * 6,
                VM_MAC,
                ETH_P_RARP,
                ArpPacket(4, VM_MAC, bytes(4), VM_MAC, bytes(4)).build(),
            ).build(),
            "not-rarp-request",
        ),
        (
            EthernetFrame(
                b"\xff" * 6,
                VM_MAC,
                ETH_P_RARP,
                ArpPacket(3, VM_MAC, bytes(4), b"\xff" * 6, bytes(4)).build(),
            ).build(),
            "target-not-unicast",
        ),
        (
            EthernetFrame(
                b"\xff" * 6,
                VM_MAC,
                ETH_P_RARP,
                ArpPacket(3, VM_MAC, bytes(16), VM_MAC, bytes(16), ptype=0x86DD).build(),
            ).build(),
            "not-ethernet-ipv4",
        ),
    ],
)
def test_bad_frames_are_counted_drops(frame: bytes, reason: str) -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    actions = eng.on_frame(frame, PORT, None, now=0.0)
    assert sends(actions) == []
    assert eng.stats[f"dropped.{reason}"] == 1
    # ...and the engine still serves the next good frame.
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=0.1))) == 1


def test_deleted_binding_still_probed_and_resolved() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(gone(remote("192.0.2.10")), now=0.0)
    eng = Engine(m)
    actions = eng.on_frame(rarp(), PORT, None, now=0.05)
    assert Resolve(BR, ip_address("192.0.2.10")) in actions
    assert len(sends(actions)) == 1


def test_macvlan_binding_does_not_double_probes() -> None:
    eng = Engine(switch(remote("192.0.2.10"), local("192.0.2.10", index=MACVLAN)))
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=0.0))) == 1


def test_tagged_rarp_probe_carries_the_tag() -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    [s] = sends(eng.on_frame(rarp(vid=30), PORT, None, now=0.0))
    assert Ether(s.frame)[Dot1Q].vlan == 30
    # Tag delivered in PACKET_AUXDATA instead of the frame: same result.
    eng2 = Engine(switch(remote("192.0.2.10")))
    [s2] = sends(eng2.on_frame(rarp(), PORT, 30, now=0.0))
    assert s2.frame == s.frame


def test_remote_entry_deleted_triggers_relearn_then_confirmation() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    first = eng.on_frame(rarp(), PORT, None, now=0.0)
    assert not [a for a in first if isinstance(a, Resolve)]  # the remote entry is in the way
    assert eng.next_deadline() == 30.0  # no retries while waiting for the withdrawal
    ev = gone(remote("192.0.2.10"))
    m.apply(ev, now=0.11)
    actions = eng.on_netlink(ev, now=0.11)
    assert Resolve(BR, ip_address("192.0.2.10")) in actions and len(sends(actions)) == 1
    inc = new(Neighbor(2, BR, ip_address("192.0.2.10"), None, NUD_INCOMPLETE))
    m.apply(inc, 0.111)
    assert eng.on_netlink(inc, 0.111) == []
    ok = new(local("192.0.2.10"))
    m.apply(ok, 0.112)
    [conf] = logs(eng.on_netlink(ok, now=0.112), "confirmed")
    assert conf.fields["after_ms"] == 112.0
    assert eng.rounds() == [] and eng.stats["confirmed"] == 1


def test_control_plane_reinstall_is_not_fought() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    ev = gone(remote("192.0.2.10"))
    m.apply(ev, 0.1)
    eng.on_netlink(ev, 0.1)
    again = new(remote("192.0.2.10"))
    m.apply(again, 0.2)
    assert eng.on_netlink(again, 0.2) == []
    # Waiting again: no retries scheduled until it is deleted once more.
    assert sends(eng.tick(5.0)) == []


def test_unanswered_probe_retries_with_backoff_then_gives_up_and_cleans() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(gone(remote("192.0.2.10")), now=0.0)
    cfg = Config(give_up=3.0, retry_backoff=(0.2, 0.5, 1.0))
    eng = Engine(m, cfg)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    times = []
    now = 0.0
    while (deadline := eng.next_deadline()) is not None:
        now = deadline
        acts = eng.tick(now)
        if sends(acts):
            times.append(round(now, 3))
        if any(isinstance(a, RemovePlaceholder) for a in acts):
            assert logs(acts, "gave-up")
            break
    assert times == [0.2, 0.7, 1.7]
    assert now == 3.0 and eng.rounds() == []


def test_shutdown_removes_placeholders_of_open_rounds() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(gone(remote("192.0.2.10")), now=0.0)
    eng = Engine(m)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert eng.shutdown() == [RemovePlaceholder(BR, ip_address("192.0.2.10"))]


def test_already_local_static_entry_probed_once_no_round_left() -> None:
    eng = Engine(switch(local("192.0.2.10", state=NUD_PERMANENT)))
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=0.0))) == 1
    assert eng.rounds() == []


def fdb(port: int, mac: bytes = VM_MAC, flags: int = 0, state: int = 0x02) -> Neighbor:
    return Neighbor(AF_BRIDGE, port, None, mac, state, flags, master=BR)


def test_fdb_move_from_vxlan_to_local_port_starts_a_round() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(new(fdb(VX, flags=NTF_EXT_LEARNED)), 0.0)
    eng = Engine(m)
    ev = new(fdb(PORT))
    previous = m.apply(ev, 1.0)
    actions = eng.on_fdb(ev, previous, 1.0)
    assert len(sends(actions)) == 1
    assert logs(actions, "announcement")[0].fields["trigger"] == "fdb-move"
    # The RARP of the same migration, a moment later: one round, not two.
    assert sends(eng.on_frame(rarp(), PORT, None, now=1.01)) == []
    assert eng.stats["rounds"] == 1 and eng.stats["dropped.duplicate"] == 1


def test_rarp_first_then_fdb_move_is_one_round() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(new(fdb(VX, flags=NTF_EXT_LEARNED)), 0.0)
    eng = Engine(m)
    assert len(sends(eng.on_frame(rarp(), PORT, None, now=1.0))) == 1
    ev = new(fdb(PORT))
    assert sends(eng.on_fdb(ev, m.apply(ev, 1.001), 1.001)) == []
    assert eng.stats["rounds"] == 1


def test_local_to_local_move_counts() -> None:
    m = switch(local("192.0.2.10", state=NUD_STALE))
    m.apply(new(fdb(PORT)), 0.0)
    eng = Engine(m)
    ev = new(fdb(PORT2))
    assert len(sends(eng.on_fdb(ev, m.apply(ev, 1.0), 1.0))) == 1


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        (None, fdb(PORT), "first sighting is no move"),
        (fdb(PORT), fdb(PORT), "refresh on the same port"),
        (fdb(PORT), fdb(VX, flags=NTF_EXT_LEARNED), "moved away to the fabric"),
        (fdb(PORT), fdb(PORT2, state=0x80), "the bridge's own address"),
    ],
)
def test_fdb_changes_that_are_not_moves_to_a_local_port(
    before: Neighbor | None, after: Neighbor, why: str
) -> None:
    m = switch(remote("192.0.2.10"))
    if before is not None:
        m.apply(new(before), 0.0)
    eng = Engine(m)
    ev = new(after)
    assert eng.on_fdb(ev, m.apply(ev, 1.0), 1.0) == [], why


def test_fdb_trigger_can_be_turned_off() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(new(fdb(VX, flags=NTF_EXT_LEARNED)), 0.0)
    eng = Engine(m, Config(fdb_trigger=False))
    ev = new(fdb(PORT))
    assert eng.on_fdb(ev, m.apply(ev, 1.0), 1.0) == []


def arp_reply_from_vm(ip: str, mac: bytes = VM_MAC) -> bytes:
    return bytes(
        Ether(dst=SVI, src=format_mac(mac))
        / ARP(op=2, hwsrc=format_mac(mac), psrc=ip, hwdst=SVI, pdst="192.0.2.252")
    )


def na_from_vm(ip: str) -> bytes:
    return bytes(
        Ether(dst=SVI, src=VM)
        / IPv6(src=ip, dst="2001:db8:100::252", hlim=255)
        / ICMPv6ND_NA(tgt=ip, R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=VM)
    )


def test_reply_while_remote_entry_exists_takes_over_once() -> None:
    m = switch(remote("192.0.2.10"), remote("2001:db8:100::10"))
    eng = Engine(m, MBB)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    # The copy seen on the bridge device and an answer via the fabric do nothing.
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), BR, None, 0.001) == []
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), VX, None, 0.001) == []
    acts = eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.001)
    assert Takeover(BR, ip_address("192.0.2.10"), VM_MAC, 82) in acts
    assert logs(acts, "takeover")[0].fields["after_ms"] == 1.0
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.002) == []
    acts6 = eng.on_frame(na_from_vm("2001:db8:100::10"), PORT, None, 0.003)
    assert Takeover(BR, ip_address("2001:db8:100::10"), VM_MAC, 82) in acts6
    # Our own write shows up as a local REACHABLE entry: confirmed.
    ok = new(local("192.0.2.10"))
    m.apply(ok, 0.004)
    assert logs(eng.on_netlink(ok, 0.004), "confirmed")


def test_vm_answer_is_proven_by_its_port_copy_in_either_order() -> None:
    # The VM's answer is seen on its port and on the bridge (the SVI here); the capture's
    # sockets may hand the copies over in either order. One proof, one takeover, and
    # nothing counted as not local.
    for order in ((PORT, BR), (BR, PORT)):
        eng = Engine(switch(remote("192.0.2.10")), MBB)
        eng.on_frame(rarp(), PORT, None, now=0.0)
        acts = [
            a
            for ix in order
            for a in eng.on_frame(arp_reply_from_vm("192.0.2.10"), ix, None, 0.001)
        ]
        acts += eng.tick(0.002) + eng.tick(0.2)
        assert [a for a in acts if isinstance(a, Takeover)] == [
            Takeover(BR, ip_address("192.0.2.10"), VM_MAC, 82)
        ], order
        assert eng.stats["replies"] == 1 and eng.stats["dropped.answer-not-local"] == 0, order


def test_svi_copy_read_a_pass_before_its_port_copy_is_not_counted() -> None:
    # The capture's sockets are read one after another: a reply arriving meanwhile can
    # have its SVI copy read in this pass and its port copy in the next, a tick between.
    eng = Engine(switch(remote("192.0.2.10")), MBB)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    eng.on_frame(arp_reply_from_vm("192.0.2.10"), BR, None, 0.001)
    assert eng.tick(0.0015) == []
    assert Takeover(BR, ip_address("192.0.2.10"), VM_MAC, 82) in eng.on_frame(
        arp_reply_from_vm("192.0.2.10"), PORT, None, 0.002
    )
    assert not logs(eng.tick(0.5), "dropped")
    assert eng.stats["dropped.answer-not-local"] == 0


def test_copies_of_one_answer_across_a_new_round_are_not_counted() -> None:
    # The SVI copy is seen in one round, the port copy after a new round of the same
    # (MAC, domain) replaced it (a short hold-down): still the VM's answer.
    eng = Engine(switch(remote("192.0.2.10")), Config(holddown=0.01))
    eng.on_frame(rarp(), PORT, None, now=0.0)
    eng.on_frame(arp_reply_from_vm("192.0.2.10"), BR, None, 0.001)
    eng.on_frame(rarp(), PORT, None, now=0.05)
    eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.06)
    assert not logs(eng.tick(0.5), "dropped")
    assert eng.stats["rounds"] == 2 and eng.stats["dropped.answer-not-local"] == 0


def test_answer_seen_only_on_the_svi_is_no_proof_and_counted() -> None:
    # The bridge's ARP suppression answering our probe (br_do_proxy_suppress_arp): the
    # reply is delivered to the bridge device only, never seen entering through a port.
    eng = Engine(switch(remote("192.0.2.10"), remote("2001:db8:100::10")), MBB)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), BR, None, 0.0002) == []
    assert eng.on_frame(na_from_vm("2001:db8:100::10"), BR, None, 0.0003) == []
    # Judged once its port copy has had time to be read (ANSWER_GRACE), not before.
    assert not logs(eng.tick(0.001), "dropped")
    assert eng.next_deadline() == pytest.approx(0.1002)
    acts = eng.tick(0.2)
    assert not [a for a in acts if isinstance(a, Takeover)]
    dropped = [a for a in logs(acts, "dropped") if a.fields["reason"] == "answer-not-local"]
    assert {a.fields["address"] for a in dropped} == {"192.0.2.10", "2001:db8:100::10"}
    assert eng.stats["dropped.answer-not-local"] == 2 and eng.stats["replies"] == 0
    assert eng.stats["takeovers"] == 0
    # An answer from the fabric (seen on the VXLAN port, then on the bridge) neither.
    eng.on_frame(arp_reply_from_vm("192.0.2.10"), VX, None, 0.3)
    eng.on_frame(arp_reply_from_vm("192.0.2.10"), BR, None, 0.3)
    assert not [a for a in eng.tick(0.5) if isinstance(a, Takeover)]
    assert eng.stats["dropped.answer-not-local"] == 3
    # The VM's own answer through its port still takes over afterwards.
    acts = eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.6)
    assert Takeover(BR, ip_address("192.0.2.10"), VM_MAC, 82) in acts


def test_reply_for_someone_else_or_unknown_round_is_ignored() -> None:
    eng = Engine(switch(remote("192.0.2.10")))
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.0) == []  # no round
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert eng.on_frame(arp_reply_from_vm("192.0.2.99"), PORT, None, 0.001) == []
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10", OTHER_MAC), PORT, None, 0.001) == []


def test_no_takeover_when_disabled_or_control_plane_reinstalls() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(takeover=False))
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.001) == []
    m = switch(remote("192.0.2.10"))
    eng = Engine(m, MBB)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.001)
    again = new(remote("192.0.2.10"))  # zebra puts its entry back: it wins
    m.apply(again, 0.01)
    eng.on_netlink(again, 0.01)
    assert eng.on_frame(arp_reply_from_vm("192.0.2.10"), PORT, None, 0.02) == []
    gone_ev = gone(remote("192.0.2.10"))
    m.apply(gone_ev, 0.1)
    assert Resolve(BR, ip_address("192.0.2.10")) in eng.on_netlink(gone_ev, 0.1)


def test_cached_domains_follow_link_and_address_changes() -> None:
    m = switch(remote("192.0.2.10"), remote("192.0.2.11", mac=b"\x52\x54\x00\x00\x00\x02"))
    eng = Engine(m)
    assert (
        len(
            [
                a
                for a in eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 0.0)
                if isinstance(a, SendFrame)
            ]
        )
        == 1
    )
    # swp1 turns into a fabric port (same ifindex, now a VXLAN device): no probe.
    gen = m.generation
    m.apply(
        new(Link(PORT, "vx-swp1", flags=1, mac=bytes(5) + b"\x11", kind="vxlan", master=BR)), 1.0
    )
    assert m.generation > gen
    other = b"\x52\x54\x00\x00\x00\x02"
    eng.on_frame(rarp_request_frame(other), PORT, None, 1.0)
    assert eng.stats["dropped.fabric-port"] == 1
    # ...and gone altogether.
    m.apply(gone(Link(PORT, "vx-swp1")), 2.0)
    eng.on_frame(rarp_request_frame(other), PORT, None, 2.0)
    assert eng.stats["dropped.unknown-interface"] == 1
    # An address event also starts over (whatever resolve reads may depend on it).
    gen = m.generation
    m.apply(new(Address(BR, ip_address("192.0.2.99"), 24)), 3.0)
    assert m.generation > gen
    # Neighbor changes do not: they are not what a domain is made of.
    gen = m.generation
    m.apply(new(local("192.0.2.12")), 4.0)
    assert m.generation == gen
    # The other ports, unchanged, still resolve.
    assert eng.on_frame(rarp_request_frame(other), PORT2, None, 5.0)
    assert eng.stats["rounds"] == 2


def test_explicit_invalidation_forgets_cached_domains() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    eng.on_frame(rarp_request_frame(VM_MAC), VX, None, 0.0)
    assert eng.stats["dropped.fabric-port"] == 1
    # A change made behind the mirror's back (not through apply/reset) ...
    m.links[VX] = Link(VX, "swp7", flags=1, mac=bytes(5) + b"\x13", kind="veth", master=BR)
    eng.invalidate_domains()
    eng.on_frame(rarp_request_frame(VM_MAC), VX, None, 1.0)
    assert eng.stats["rounds"] == 1


# -- what the daemon used to decide: netlink events, placeholders, leftovers ----------


def test_on_event_applies_to_the_mirror_and_routes_neighbors() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    # EVPN withdraws its remote entry: the mirror forgets it, and the round resolves
    # and probes again (on_netlink).
    acts = eng.on_event(gone(remote("192.0.2.10")), 0.1)
    assert m.neighbor(BR, ip_address("192.0.2.10")) is None
    assert acts[0] == Resolve(BR, ip_address("192.0.2.10"))
    assert len(sends(acts)) == 1 and logs(acts, "remote-deleted")
    # The VM answered: the kernel learned it; the mirror has it and the round confirms.
    acts = eng.on_event(new(local("192.0.2.10")), 0.2)
    assert m.neighbor(BR, ip_address("192.0.2.10")) is not None
    assert logs(acts, "confirmed") and eng.rounds() == []
    # A link or an address only changes the mirror.
    gen = m.generation
    assert eng.on_event(new(Address(BR, ip_address("192.0.2.99"), 24)), 0.3) == []
    assert m.generation > gen


def test_on_event_routes_bridge_fdb_moves_with_the_entry_they_replace() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    assert eng.on_event(new(fdb(VX, flags=NTF_EXT_LEARNED)), 0.0) == []  # first sighting
    acts = eng.on_event(new(fdb(PORT)), 1.0)  # moved from the VXLAN port: a round
    assert len(sends(acts)) == 1
    [ann] = logs(acts, "announcement")
    assert ann.fields["trigger"] == "fdb-move" and ann.fields["moved_from"] == "vxlan100"
    # The same entry again (no move): nothing.
    assert eng.on_event(new(fdb(PORT)), 1.5) == []
    # Without the FDB trigger the mirror still follows, and no round starts.
    m2 = switch(remote("192.0.2.10"))
    eng2 = Engine(m2, Config(fdb_trigger=False))
    eng2.on_event(new(fdb(VX, flags=NTF_EXT_LEARNED)), 0.0)
    assert eng2.on_event(new(fdb(PORT)), 1.0) == []


def _giving_up(eng: Engine) -> list:  # type: ignore[type-arg]
    acts: list = []  # type: ignore[type-arg]
    while (deadline := eng.next_deadline()) is not None:
        acts += eng.tick(deadline)
    return acts


@pytest.mark.parametrize(
    ("entry", "removed"),
    [
        (None, True),  # NTF_USE made it without a notification: may be ours
        (NUD_INCOMPLETE, True),
        (NUD_FAILED, True),  # nobody answered: the kernel keeps it FAILED
        (NUD_REACHABLE, False),  # it binds (someone else's answer): never touched
        (NUD_STALE, False),
        (NUD_PERMANENT, False),
    ],
)
def test_give_up_removes_a_placeholder_only_if_it_binds_nothing(
    entry: int | None, removed: bool
) -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(gone(remote("192.0.2.10")), now=0.0)
    eng = Engine(m, Config(give_up=3.0))
    acts = eng.on_frame(rarp(), PORT, None, now=0.0)
    assert Resolve(BR, ip_address("192.0.2.10")) in acts
    if entry is not None:
        # Another MAC's entry: not the VM's answer, so the round stays open.
        eng.on_event(new(local("192.0.2.10", mac=OTHER_MAC, state=entry)), 0.5)
    acts = _giving_up(eng)
    assert logs(acts, "gave-up")
    want = [RemovePlaceholder(BR, ip_address("192.0.2.10"))] if removed else []
    assert [a for a in acts if isinstance(a, RemovePlaceholder)] == want


def test_leftovers_are_our_protocols_entries_that_bind_nothing() -> None:
    ours = Config().neigh_protocol

    def entry(ip: str, state: int, protocol: int) -> Neighbor:
        return Neighbor(AF_INET, BR, ip_address(ip), None, state, protocol=protocol)

    m = switch(
        entry("192.0.2.20", NUD_INCOMPLETE, ours),
        entry("192.0.2.21", NUD_FAILED, ours),
        entry("192.0.2.22", 0, ours),  # NUD_NONE
        entry("192.0.2.23", NUD_REACHABLE, ours),  # a takeover: the VM's proven binding
        entry("192.0.2.24", NUD_STALE, ours),
        entry("192.0.2.25", NUD_INCOMPLETE, 186),  # zebra's
        entry("192.0.2.26", NUD_FAILED, 0),  # the kernel's own
    )
    m.apply(new(fdb(PORT)), 0.0)  # bridge entries have no address: never chosen
    got = sorted(str(a.address) for a in Engine(m).leftovers())
    assert got == ["192.0.2.20", "192.0.2.21", "192.0.2.22"]
    assert all(isinstance(a, RemovePlaceholder) for a in Engine(m).leftovers())
    assert Engine(m, Config(neigh_protocol=99)).leftovers() == []


# -- send first -----------------------------------------------------------------------


def test_send_callback_gets_resolve_and_probe_before_the_bookkeeping() -> None:
    m = switch(remote("192.0.2.10"), local("2001:db8:100::10", state=NUD_STALE))
    m.apply(gone(remote("192.0.2.10")), now=0.0)  # remembered: resolve, then probe
    timeline: list[object] = []
    seen_at_send: list[tuple[int, int]] = []

    def send(a: object) -> None:
        # What the engine had done when it handed this over.
        seen_at_send.append((eng.stats["rounds"], len(eng.rounds())))
        timeline.append(a)

    eng = Engine(m, send=send)
    returned = eng.on_frame(rarp(), PORT, None, now=0.0)
    timeline += returned
    kinds = [type(a).__name__ for a in timeline]
    # Each target's Resolve, then its probe (the local STALE IPv6 entry is resolved
    # too: the kernel then takes the VM's answer as confirmation).
    assert kinds == ["Resolve", "SendFrame", "Resolve", "SendFrame", "Log"], kinds
    assert {timeline[0], timeline[2]} == {
        Resolve(BR, ip_address("192.0.2.10")),
        Resolve(BR, ip_address("2001:db8:100::10")),
    }
    # The probes left before the round existed, was counted or was logged.
    assert seen_at_send == [(0, 0)] * 4
    assert not sends(returned) and not [a for a in returned if isinstance(a, Resolve)]
    [ann] = logs(returned, "announcement")
    assert ann.fields["probes"] == 2 and eng.stats["rounds"] == 1
    # The same round without `send`: the same actions, in the same order.
    m2 = switch(remote("192.0.2.10"), local("2001:db8:100::10", state=NUD_STALE))
    m2.apply(gone(remote("192.0.2.10")), now=0.0)
    assert Engine(m2).on_frame(rarp(), PORT, None, now=0.0) == timeline
    # Retries and a withdrawal's resolve+probe go the same way.
    timeline.clear()
    eng.tick(0.2)
    assert [type(a).__name__ for a in timeline] == ["Resolve", "SendFrame"] * 2


# -- operator settings: port globs, and reconfiguring a live engine (SIGHUP) ----------


def n_probes(actions: list) -> int:  # type: ignore[type-arg]
    return len(sends(actions))


def reasons(actions: list) -> list[object]:  # type: ignore[type-arg]
    return [a.fields["reason"] for a in logs(actions, "dropped")]


def test_include_matches_port_or_svi() -> None:
    for include, served in [
        (("swp1",), {PORT}),
        (("swp*",), {PORT, PORT2}),
        (("br100",), {PORT, PORT2}),  # the SVI: every port of the VLAN
        (("swp2", "bond*"), {PORT2}),
    ]:
        for port in (PORT, PORT2):
            eng = Engine(switch(remote("192.0.2.10")), Config(include=include))
            actions = eng.on_frame(rarp(), port, None, now=0.0)
            if port in served:
                assert n_probes(actions) == 1, (include, port)
            else:
                assert n_probes(actions) == 0 and reasons(actions) == ["excluded-port"]
                assert eng.stats["dropped.excluded-port"] == 1


def test_exclude_wins_over_include() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(include=("swp*",), exclude=("swp2",)))
    assert n_probes(eng.on_frame(rarp(), PORT2, None, now=0.0)) == 0
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) == 1
    eng = Engine(switch(remote("192.0.2.10")), Config(exclude=("br1*",)))
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) == 0


def test_fabric_port_globs() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=("swp1*",)))
    actions = eng.on_frame(rarp(), PORT, None, now=0.0)
    assert n_probes(actions) == 0 and reasons(actions) == ["fabric-port"]
    # A tagged sub-interface of a matching port is a different name: not matched.
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=("swp1",)))
    assert "fabric-port" not in reasons(eng.on_frame(rarp(), TRUNK_V10, None, now=0.0))
    assert eng.stats["dropped.fabric-port"] == 0
    # VXLAN stays fabric whatever the globs say.
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=()))
    assert reasons(eng.on_frame(rarp(), VX, None, now=0.0)) == ["fabric-port"]


def test_reconfigure_keeps_rounds_and_holddown() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(holddown=5.0))
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) == 1
    assert eng._rounds  # the VM has not answered: the round is open
    eng.reconfigure(replace(eng.config, holddown=10.0, include=("swp*",)))
    assert eng._rounds, "a reload must not drop rounds in flight"
    # Hold-down survives the reload and follows the new window.
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=7.0)) == 0
    assert eng.stats["dropped.duplicate"] == 1
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=10.5)) == 1
    # The new include list applies at once.
    eng.reconfigure(replace(eng.config, include=("nothing*",)))
    assert reasons(eng.on_frame(rarp(), PORT2, None, now=30.0)) == ["excluded-port"]


def test_reconfigure_rate_limits() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(holddown=0.0, port_rate=Rate(1.0, 2.0)))
    got = [n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) for _ in range(3)]
    assert got == [1, 1, 0] and eng.stats["dropped.rate-limit-port"] == 1
    # Same limits again: the bucket keeps its (empty) state, no fresh burst.
    eng.reconfigure(replace(eng.config, holddown=0.0))
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) == 0
    # New limits: a new bucket, with the new burst.
    eng.reconfigure(replace(eng.config, port_rate=Rate(1.0, 5.0)))
    got = [n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) for _ in range(6)]
    assert got == [1, 1, 1, 1, 1, 0]


def test_remote_target_refused_by_probe_limit_is_probed_later() -> None:
    # Two VMs behind EVPN remote entries, a probe bucket of one: the second
    # VM's probe is refused. It must still be probed once the bucket refills,
    # or its answer (and make-before-break) never comes.
    eng = Engine(
        switch(remote("192.0.2.10"), remote("192.0.2.11", mac=OTHER_MAC)),
        Config(probe_rate=Rate(1.0, 1.0)),
    )
    assert n_probes(eng.on_frame(rarp(), PORT, None, now=0.0)) == 1
    other = eng.on_frame(rarp(OTHER_MAC), PORT, None, now=0.0)
    assert n_probes(other) == 0 and reasons(other) == ["rate-limit-probe"]
    deadline = eng.next_deadline()
    assert deadline is not None and deadline < 1.0  # the retry, not the 30 s give-up
    later = eng.tick(1.5)
    sent = [a for a in later if isinstance(a, SendFrame)]
    assert [str(a.target) for a in sent] == ["192.0.2.11"]
    # Probed once: it then waits for the VM's answer or EVPN's withdrawal, no more.
    assert [a for a in eng.tick(20.0) if isinstance(a, SendFrame)] == []
