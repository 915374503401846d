"""CaptureGroup against the real kernel: the PACKET_FANOUT_CBPF group spreads frames by
ingress ifindex, keeps the RARP filter and the PACKET_OUTGOING drop on every member, and
keeps a flooded port's queue from costing another port its frames (which one socket
does not)."""

from __future__ import annotations

import pytest

import netlab
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.packetsock import (
    CAPTURE_SOCKETS,
    CaptureGroup,
    PacketSender,
    RarpCapture,
    Sighting,
)

pytestmark = pytest.mark.netns

PORTS = CAPTURE_SOCKETS + 2  # more ports than members: some members serve two ports
# Small enough that a few thousand frames overflow it (SO_RCVBUFFORCE; the kernel
# doubles it and counts each queued skb's truesize, ~0.8 KiB for a 60-octet frame).
SMALL_RCVBUF = 64 << 10
FLOOD = 5000


def mac(i: int) -> bytes:
    return bytes([0x02, 0x5F]) + i.to_bytes(4, "big")


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
                    tx.send(rarp_request_frame(mac(p)))
        # Sent by the switch itself: seen by the taps as PACKET_OUTGOING, dropped.
        with netlab.entered(sw.name), PacketSender("sw0") as tx:
            tx.send(rarp_request_frame(mac(999)))
        want = {mac(p): sw.ifindex(f"sw{p}") for p in range(PORTS)}
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
        assert mac(999) not in seen
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
                    tx.send(rarp_request_frame(mac(p)))
        group.set_filter(capture_filter())
        with netlab.entered(hv.name):
            for p in range(PORTS):
                with PacketSender(f"hv{p}") as tx:
                    tx.send(rarp_request_frame(mac(100 + p)))
        seen: set[bytes] = set()

        def poll() -> bool:
            seen.update(s.data[6:12] for s in group.recv_batch())
            return len(seen) >= PORTS

        netlab.wait_until(poll, timeout=5, interval=0.01, what="frames after the swap")
        assert seen == {mac(100 + p) for p in range(PORTS)}  # none passed the drop-all filter
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
                    tx.send(rarp_request_frame(mac(10_000 + i)))
            with PacketSender("hv1") as tx:
                for i in range(5):
                    tx.send(rarp_request_frame(mac(i)))
        # veth hands frames to the backlog (netif_rx), which a softirq may process after
        # send() returned: wait until the kernel has seen all of them (queued or dropped),
        # reading nothing meanwhile, so the queue stays as full as the flood left it.
        netlab.wait_until(
            lambda: cap.statistics()[0] >= FLOOD + 5, timeout=5, what="every frame accounted"
        )
        legit = {mac(i) for i in range(5)}
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
