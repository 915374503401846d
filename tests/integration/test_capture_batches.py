"""RarpCapture's batch reader against the real kernel: the fixed-layout shortcuts it
takes (mmsghdr fields read from raw memory, the usual control-message layout read in
one unpack) give what the general code gives, and are the ones actually taken."""

from __future__ import annotations

import struct
import time

import pytest

import netlab
from rarp_replay import packetsock
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.packetsock import PacketSender, RarpCapture, Sighting

pytestmark = pytest.mark.netns


def mac(i: int) -> bytes:
    return bytes([0x02, 0x5E]) + i.to_bytes(4, "big")


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
                m = mac(i)
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
