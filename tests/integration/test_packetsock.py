"""packetsock against the real kernel.

- CaptureGroup: the PACKET_FANOUT_CBPF group spreads frames by ingress ifindex, keeps the
  RARP filter and the PACKET_OUTGOING drop on every member, and keeps a flooded port's
  queue from costing another port its frames (which one socket does not).
- RarpCapture's batch reader: the fixed-layout shortcuts it takes (mmsghdr fields read
  from raw memory, the usual control-message layout read in one unpack) give what the
  general code gives, and are the ones actually taken.
- RarpCapture on a bridge and under a burst; PacketSender and the interface helpers.
"""

from __future__ import annotations

import struct
import time

import pytest

from rarp_replay import packetsock
from rarp_replay.errors import InterfaceError
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.macaddr import parse_mac
from rarp_replay.packetsock import (
    CAPTURE_SOCKETS,
    PACKET_OUTGOING,
    CaptureGroup,
    PacketSender,
    RarpCapture,
    Sighting,
    interface_index,
    interface_is_up,
    interface_mac,
)
from tests.support import netlab
from tests.support.netlab import mac_of
from tests.support.wire import SENTINEL, capture_in, collect_until, saw_mac, send_sentinel

pytestmark = pytest.mark.netns

PORTS = CAPTURE_SOCKETS + 2  # more ports than members: some members serve two ports
# Small enough that a few thousand frames overflow it (SO_RCVBUFFORCE; the kernel
# doubles it and counts each queued skb's truesize, ~0.8 KiB for a 60-octet frame).
SMALL_RCVBUF = 64 << 10
FLOOD = 5000


def ports(lab: netlab.Lab, count: int) -> tuple[netlab.Netns, netlab.Netns]:
    hv, sw = lab.netns("hv"), lab.netns("sw")
    for p in range(count):
        lab.veth(hv, f"hv{p}", sw, f"sw{p}")
    return hv, sw


def drain(reader: RarpCapture | CaptureGroup) -> list[Sighting]:
    got: list[Sighting] = []
    while batch := reader.recv_batch():
        got += batch
    return got


def test_each_port_lands_on_member_ifindex_mod_n_and_outgoing_is_dropped(
    lab: netlab.Lab,
) -> None:
    hv, sw = ports(lab, PORTS)
    with netlab.entered(sw.name):
        group = CaptureGroup(capture_filter())
        other = CaptureGroup(
            capture_filter()
        )  # a second daemon in the same namespace: its own group
    try:
        assert group.group != other.group
        with netlab.entered(hv.name):
            for p in range(PORTS):
                with PacketSender(f"hv{p}") as tx:
                    tx.send(rarp_request_frame(mac_of(0x5F, p)))
        # Sent by the switch itself: seen by the taps as PACKET_OUTGOING, dropped.
        with netlab.entered(sw.name), PacketSender("sw0") as tx:
            tx.send(rarp_request_frame(mac_of(0x5F, 999)))
        want = {mac_of(0x5F, p): sw.ifindex(f"sw{p}") for p in range(PORTS)}
        seen: dict[bytes, int] = {}
        got_other: list[Sighting] = []

        def poll() -> bool:
            for i, member in enumerate(group.members):
                for s in member.recv_batch():
                    assert s.ifindex % CAPTURE_SOCKETS == i, (s.ifindex, i)
                    seen[s.data[6:12]] = s.ifindex
            got_other.extend(drain(other))
            return len(seen) >= PORTS and len(got_other) >= PORTS

        netlab.wait_until(poll, timeout=5, interval=0.01, what="a RARP from every port")
        assert seen == want
        assert mac_of(0x5F, 999) not in seen
        assert {s.data[6:12] for s in got_other} == set(want)  # both groups get everything
        assert group.drops() == 0
    finally:
        group.close()
        other.close()


def test_set_filter_reaches_every_member(lab: netlab.Lab) -> None:
    hv, sw = ports(lab, PORTS)
    with netlab.entered(sw.name):
        group = CaptureGroup(capture_filter())
    try:
        group.set_filter([(0x06, 0, 0, 0)])  # ret 0: nothing passes
        with netlab.entered(hv.name):
            for p in range(PORTS):
                with PacketSender(f"hv{p}") as tx:
                    tx.send(rarp_request_frame(mac_of(0x5F, p)))
        group.set_filter(capture_filter())
        with netlab.entered(hv.name):
            for p in range(PORTS):
                with PacketSender(f"hv{p}") as tx:
                    tx.send(rarp_request_frame(mac_of(0x5F, 100 + p)))
        seen: set[bytes] = set()

        def poll() -> bool:
            seen.update(s.data[6:12] for s in group.recv_batch())
            return len(seen) >= PORTS

        netlab.wait_until(poll, timeout=5, interval=0.01, what="frames after the swap")
        assert seen == {
            mac_of(0x5F, 100 + p) for p in range(PORTS)
        }  # none passed the drop-all filter
    finally:
        group.close()


def _flood_then_burst(
    lab: netlab.Lab, open_capture: type[RarpCapture] | type[CaptureGroup]
) -> tuple[int, int]:
    """Overflow the capture with FLOOD frames on port 0 (nobody reading), then send 5 on
    port 1; (frames of port 1 read, kernel drops)."""
    hv, sw = ports(lab, 2)
    assert sw.ifindex("sw0") % CAPTURE_SOCKETS != sw.ifindex("sw1") % CAPTURE_SOCKETS
    with netlab.entered(sw.name):
        cap = open_capture(capture_filter(), rcvbuf=SMALL_RCVBUF)
    try:
        with netlab.entered(hv.name):
            with PacketSender("hv0") as tx:
                for i in range(FLOOD):
                    tx.send(rarp_request_frame(mac_of(0x5F, 10_000 + i)))
            with PacketSender("hv1") as tx:
                for i in range(5):
                    tx.send(rarp_request_frame(mac_of(0x5F, i)))
        # veth hands frames to the backlog (netif_rx), which a softirq may process after
        # send() returned: wait until the kernel has seen all of them (queued or dropped),
        # reading nothing meanwhile, so the queue stays as full as the flood left it.
        netlab.wait_until(
            lambda: cap.statistics()[0] >= FLOOD + 5, timeout=5, what="every frame accounted"
        )
        legit = {mac_of(0x5F, i) for i in range(5)}
        got = [s for s in drain(cap) if s.data[6:12] in legit]
        return len(got), cap.drops()
    finally:
        cap.close()


def test_a_flooded_port_does_not_cost_another_port_its_frames(lab: netlab.Lab) -> None:
    heard, drops = _flood_then_burst(lab, CaptureGroup)
    assert drops > 0  # the flood did overflow its member's queue
    assert heard == 5  # and the other port's queue had room for its whole burst


def test_one_socket_loses_the_other_ports_burst(lab: netlab.Lab) -> None:
    """The contrast: with a single socket the same flood leaves no room for port 1."""
    heard, drops = _flood_then_burst(lab, RarpCapture)
    assert drops > 0
    assert heard == 0


# -- RarpCapture's batch reader


def tagged(frame: bytes, tpid: int, vid: int) -> bytes:
    return frame[:12] + struct.pack("!HH", tpid, vid) + frame[12:]


def test_batches_across_reused_slots_match_the_general_parser(lab: netlab.Lab) -> None:
    hv, sw = lab.netns("hv"), lab.netns("sw")
    lab.veth(hv, "hv0", sw, "sw0")
    with netlab.entered(sw.name):
        cap = RarpCapture(capture_filter())
    sent: dict[bytes, tuple[int | None, int | None]] = {}
    try:
        with netlab.entered(hv.name), PacketSender("hv0") as tx:
            # More frames than one batch holds (256), so slots are reused and their
            # lengths restored; tagged ones carry the tag in PACKET_AUXDATA.
            for i in range(600):
                m = mac_of(0x5E, i)
                frame = rarp_request_frame(m)
                if i % 3 == 1:
                    frame, want = tagged(frame, 0x8100, 100 + i % 7), (0x8100, 100 + i % 7)
                elif i % 3 == 2:
                    frame, want = tagged(frame, 0x88A8, 10), (0x88A8, 10)
                else:
                    want = (None, None)
                tx.send(frame)
                sent[m] = want
        got: list[Sighting] = []
        usual = 0
        before = time.time()

        def poll() -> bool:
            nonlocal usual
            batch = cap.recv_batch()
            mv = cap._msgs_view
            for i, s in enumerate(batch):
                at = i * packetsock._CONTROL_SIZE
                length = packetsock._SIZE_T.unpack_from(
                    mv, i * packetsock._MMSG_SIZE + packetsock._MMSG_CONTROLLEN_AT
                )[0]
                general = packetsock._parse_control_any(cap._control_view, at, length)
                assert (s.vlan_tci, s.vlan_tpid, s.timestamp) == general
                first = packetsock._CMSGHDR.unpack_from(cap._control_view, at)
                usual += first == (
                    packetsock._TS_CMSG_LEN,
                    packetsock._SOL_SOCKET,
                    packetsock._SCM_TIMESTAMPNS,
                )
            got.extend(batch)
            return len(got) >= len(sent)

        netlab.wait_until(poll, timeout=5, what="all frames captured")
    finally:
        cap.close()
    assert len(got) == len(sent)
    assert usual == len(got)  # the one-unpack layout is what this kernel writes
    ifindex = sw.ifindex("sw0")
    for s in got:
        m = s.data[6:12]
        tpid, vid = sent[m]
        assert s.ifindex == ifindex
        assert s.vlan_tpid == tpid
        assert s.vid == vid
        assert len(s.data) == 60  # the tag moved out of the frame, to the auxdata
        assert s.data[12:14] == b"\x80\x35"
        assert before - 1 < s.timestamp < time.time() + 1


# -- RarpCapture on a bridge and under a burst; PacketSender and the interface helpers


MAC = "52:54:00:12:34:56"


@pytest.fixture
def pair(lab: netlab.Lab) -> tuple[netlab.Netns, netlab.Netns]:
    hv, sw = lab.netns("hv"), lab.netns("sw")
    lab.veth(hv, "hv0", sw, "sw0")
    return hv, sw


def test_interface_helpers(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, _sw = pair
    ifindex, mac = hv.ifindex("hv0"), hv.mac("hv0")  # (entered() is not reentrant)
    with netlab.entered(hv.name):
        assert interface_index("hv0") == ifindex
        assert interface_is_up("hv0")
        assert interface_mac("hv0") == mac
    with netlab.entered(hv.name):
        sender, unbound = PacketSender("hv0"), PacketSender()
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            interface_index("nosuch0")
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            interface_is_up("nosuch0")
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            PacketSender("nosuch0")
    hv.ip("link", "set", "hv0", "down")
    with netlab.entered(hv.name):
        assert not interface_is_up("hv0")
    frame = rarp_request_frame(parse_mac(MAC))
    with pytest.raises(InterfaceError, match=r"^interface hv0 is down$"):
        sender.send(frame)
    with pytest.raises(InterfaceError, match=r"is down$"):
        unbound.send_on(ifindex, frame)
    with pytest.raises(InterfaceError, match=r"vanished$"):
        unbound.send_on(999_999, frame)
    hv.ip("link", "del", "hv0")
    with pytest.raises(InterfaceError, match=r"^interface hv0 vanished$"):
        sender.send(frame)
    sender.close()
    unbound.close()


def test_rarp_capture_on_a_bridge_sees_port_and_bridge_never_outgoing(
    lab: netlab.Lab,
) -> None:
    hv, sw, other = lab.netns("hv"), lab.netns("sw"), lab.netns("other")
    # The capture exists before any interface: an unbound socket serves later ones too.
    with capture_in(sw) as cap:
        lab.veth(hv, "hv0", sw, "sw0")
        lab.veth(other, "ot0", sw, "sw1")  # a second port: the bridge floods out of it
        sw.bridge("br0", "sw0", "sw1")
        port, bridge = sw.ifindex("sw0"), sw.ifindex("br0")
        mac = parse_mac(MAC)
        rarp = rarp_request_frame(mac)
        arp = b"\xff" * 6 + mac + b"\x08\x06" + rarp[14:]
        ipv6 = b"\x33\x33\x00\x00\x00\x01" + mac + b"\x86\xdd" + bytes(46)
        qinq = rarp[:12] + b"\x88\xa8\x00\x0a\x81\x00\x00\x64" + rarp[12:]
        with netlab.entered(hv.name), PacketSender("hv0") as sender:
            for frame in (arp, ipv6, rarp, qinq):
                sender.send(frame)
        send_sentinel(hv, "hv0")
        got = collect_until(cap, saw_mac(SENTINEL))
        assert cap.drops() == 0
    ours = [s for s in got if s.data[6:12] == mac]
    # Each RARP twice (port, then bridge), ARP and IPv6 never, outgoing floods never.
    assert [(s.ifindex, s.data[12:14]) for s in ours] == [
        (port, b"\x80\x35"),
        (bridge, b"\x80\x35"),
        # QinQ: the outer S-tag went to auxdata, the inner C-tag stays in the frame.
        (port, b"\x81\x00"),
        (bridge, b"\x81\x00"),
    ]
    assert all(s.pkt_type != PACKET_OUTGOING for s in got)
    assert ours[0].vlan_tci is None and ours[0].vlan_tpid is None
    assert ours[2].vlan_tpid == 0x88A8 and ours[2].vid == 10
    assert ours[0].data == rarp
    assert ours[0].timestamp == pytest.approx(time.time(), abs=5)


def test_rarp_capture_takes_a_burst_without_drops(
    pair: tuple[netlab.Netns, netlab.Netns],
) -> None:
    hv, sw = pair
    burst = 2000  # a host evacuation announcing many VMs at once
    frames = [rarp_request_frame(b"\x52\x54\x00" + i.to_bytes(3, "big")) for i in range(burst)]
    with capture_in(sw) as cap:
        assert cap.receive_buffer >= 8 * 1024 * 1024
        with netlab.entered(hv.name), PacketSender() as sender:
            ifindex = interface_index("hv0")
            for frame in frames:  # unbound sender, interface chosen per frame
                sender.send_on(ifindex, frame)
        send_sentinel(hv, "hv0")
        # Read only after the whole burst is queued: the receive buffer must hold it.
        time.sleep(0.2)
        got = collect_until(cap, saw_mac(SENTINEL))
        assert cap.drops() == 0
    assert sorted(s.data for s in got if s.data[:1] == b"\xff" and s.data[6:9] == b"RT\x00") == (
        sorted(frames)
    )
