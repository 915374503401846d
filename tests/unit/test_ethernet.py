"""Ethernet/802.1Q codec: hand-checked bytes, scapy as an independent decoder, errors."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from rarp_replay.errors import InvalidFrameError, TruncatedFrameError
from rarp_replay.frames.ethernet import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_RARP,
    ETH_ZLEN,
    EthernetFrame,
    VlanTag,
)

DST = bytes.fromhex("525400123456")
SRC = bytes.fromhex("02aabbccddee")
SCAPY_DST = "52:54:00:12:34:56"
SCAPY_SRC = "02:aa:bb:cc:dd:ee"


def test_constants() -> None:
    assert (ETH_P_IP, ETH_P_ARP, ETH_P_RARP) == (0x0800, 0x0806, 0x8035)
    assert (ETH_P_8021Q, ETH_P_8021AD, ETH_P_IPV6) == (0x8100, 0x88A8, 0x86DD)
    assert ETH_ZLEN == 60


def test_untagged_hand_checked_and_padded() -> None:
    frame = EthernetFrame(DST, SRC, 0x0800, b"\x45\x00").build()
    assert frame == bytes.fromhex("52540012345602aabbccddee08004500") + bytes(44)
    assert len(frame) == ETH_ZLEN


def test_pad_false_and_long_payload_not_padded() -> None:
    assert len(EthernetFrame(DST, SRC, 0x0800, b"x").build(pad=False)) == 15
    assert len(EthernetFrame(DST, SRC, 0x0800, bytes(100)).build()) == 114


def test_padding_counts_tags() -> None:
    frame = EthernetFrame(DST, SRC, ETH_P_ARP, b"", (VlanTag(5),)).build()
    assert len(frame) == ETH_ZLEN
    assert frame[12:18] == bytes.fromhex("8100 0005 0806")


def test_untagged_decoded_by_scapy() -> None:
    frame = EthernetFrame(DST, SRC, ETH_P_IPV6, b"payload-bytes").build()
    pkt = Ether(frame)
    assert pkt.dst == SCAPY_DST
    assert pkt.src == SCAPY_SRC
    assert pkt.type == ETH_P_IPV6
    assert bytes(pkt.payload)[:13] == b"payload-bytes"


def test_8021q_decoded_by_scapy() -> None:
    tag = VlanTag(vid=1234, pcp=5, dei=1)
    frame = EthernetFrame(DST, SRC, ETH_P_ARP, bytes(28), (tag,)).build()
    pkt = Ether(frame)
    assert pkt.type == ETH_P_8021Q
    dot1q = pkt[Dot1Q]
    assert (dot1q.vlan, dot1q.prio, dot1q.dei, dot1q.type) == (1234, 5, 1, ETH_P_ARP)
    assert len(frame) == ETH_ZLEN


def test_qinq_decoded_by_scapy() -> None:
    tags = (VlanTag(300, pcp=2, tpid=ETH_P_8021AD), VlanTag(42, dei=1))
    frame = EthernetFrame(DST, SRC, ETH_P_RARP, bytes(28), tags).build()
    assert frame[12:22] == bytes.fromhex("88a8 412c 8100 102a 8035")
    pkt = Ether(frame)
    assert pkt.type == ETH_P_8021AD
    outer, inner = pkt[Dot1AD], pkt[Dot1Q]
    assert (outer.vlan, outer.prio, outer.dei, outer.type) == (300, 2, 0, ETH_P_8021Q)
    assert (inner.vlan, inner.prio, inner.dei, inner.type) == (42, 0, 1, ETH_P_RARP)


def test_parse_scapy_untagged() -> None:
    raw = bytes(Ether(dst=SCAPY_DST, src=SCAPY_SRC, type=0x0800) / Raw(b"abc"))
    frame = EthernetFrame.parse(raw)
    assert frame == EthernetFrame(DST, SRC, 0x0800, b"abc")
    assert frame.vid is None


def test_parse_scapy_8021q() -> None:
    raw = bytes(
        Ether(dst=SCAPY_DST, src=SCAPY_SRC)
        / Dot1Q(vlan=4094, prio=7, dei=1, type=ETH_P_ARP)
        / Raw(b"xyz")
    )
    frame = EthernetFrame.parse(raw)
    assert frame.tags == (VlanTag(4094, 7, 1, ETH_P_8021Q),)
    assert frame.ethertype == ETH_P_ARP
    assert frame.payload == b"xyz"
    assert frame.vid == 4094


def test_parse_scapy_qinq_padded() -> None:
    raw = bytes(
        Ether(dst=SCAPY_DST, src=SCAPY_SRC)
        / Dot1AD(vlan=100, prio=1)
        / Dot1Q(vlan=200, type=ETH_P_RARP)
        / Raw(b"r")
    ).ljust(ETH_ZLEN, b"\x00")
    frame = EthernetFrame.parse(raw)
    assert frame.tags == (VlanTag(100, 1, 0, ETH_P_8021AD), VlanTag(200, 0, 0, ETH_P_8021Q))
    assert frame.vid == 200  # the customer (inner) VLAN
    assert frame.ethertype == ETH_P_RARP
    # Padding stays in the payload, as on the wire.
    assert frame.payload == b"r" + bytes(ETH_ZLEN - 23)


def test_8023_length_kept() -> None:
    raw = DST + SRC + b"\x00\x26" + bytes(46)
    frame = EthernetFrame.parse(raw)
    assert frame.ethertype == 0x26
    assert frame.payload == bytes(46)
    assert frame.build() == raw


def test_parse_accepts_bytearray_and_memoryview() -> None:
    raw = EthernetFrame(DST, SRC, 0x0800, b"abc").build(pad=False)
    for data in (bytearray(raw), memoryview(raw)):
        frame = EthernetFrame.parse(data)  # type: ignore[arg-type]
        assert type(frame.payload) is bytes
        assert frame.payload == b"abc"


def test_parse_truncated_header() -> None:
    with pytest.raises(TruncatedFrameError):
        EthernetFrame.parse(bytes(13))


def test_parse_empty_payload_ok() -> None:
    assert EthernetFrame.parse(DST + SRC + b"\x08\x06").payload == b""


@pytest.mark.parametrize("cut", [14, 15, 16, 17])
def test_parse_truncated_tag(cut: int) -> None:
    raw = EthernetFrame(DST, SRC, ETH_P_ARP, b"", (VlanTag(7),)).build(pad=False)
    assert len(raw) == 18
    with pytest.raises(TruncatedFrameError):
        EthernetFrame.parse(raw[:cut])


def test_tag_cap() -> None:
    eight = DST + SRC + b"\x81\x00\x00\x01" * 8 + b"\x08\x00"
    assert len(EthernetFrame.parse(eight).tags) == 8
    nine = DST + SRC + b"\x81\x00\x00\x01" * 9 + b"\x08\x00"
    with pytest.raises(InvalidFrameError):
        EthernetFrame.parse(nine)
    with pytest.raises(InvalidFrameError):
        EthernetFrame(DST, SRC, 0x0800, b"", (VlanTag(1),) * 9).build()


@pytest.mark.parametrize(
    "tag",
    [
        VlanTag(-1),
        VlanTag(4096),
        VlanTag(1, pcp=8),
        VlanTag(1, pcp=-1),
        VlanTag(1, dei=2),
        VlanTag(1, tpid=0x9100),
    ],
)
def test_bad_tag_rejected(tag: VlanTag) -> None:
    with pytest.raises(InvalidFrameError):
        tag.build()
    with pytest.raises(InvalidFrameError):
        EthernetFrame(DST, SRC, 0x0800, b"", (tag,)).build()


def test_tag_extremes_build() -> None:
    assert VlanTag(4095, 7, 1).build() == bytes.fromhex("8100ffff")
    assert VlanTag(0).build() == bytes.fromhex("81000000")


@pytest.mark.parametrize(
    "frame",
    [
        EthernetFrame(DST[:5], SRC, 0x0800, b""),
        EthernetFrame(DST, SRC + b"\x00", 0x0800, b""),
        EthernetFrame(DST, SRC, 0x10000, b""),
        EthernetFrame(DST, SRC, -1, b""),
        EthernetFrame(DST, SRC, ETH_P_8021Q, b""),
        EthernetFrame(DST, SRC, ETH_P_8021AD, b""),
    ],
)
def test_bad_frame_rejected(frame: EthernetFrame) -> None:
    with pytest.raises(InvalidFrameError):
        frame.build()


def test_frozen_and_slotted() -> None:
    frame = EthernetFrame(DST, SRC, 0x0800, b"")
    with pytest.raises(AttributeError):
        frame.dst = SRC  # type: ignore[misc]
    assert not hasattr(frame, "__dict__")
    assert not hasattr(VlanTag(1), "__dict__")
