"""ARP/RARP codec: QEMU's announce frame byte for byte, scapy cross-checks, errors."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.errors import InvalidFrameError, TruncatedFrameError
from rarp_replay.frames.arp import (
    HTYPE_ETHERNET,
    PTYPE_IPV4,
    ArpOp,
    ArpPacket,
    ArpRequestTemplate,
    arp_reply,
    arp_request,
    arp_request_frame,
    parse_arp_frame,
    rarp_request,
    rarp_request_frame,
)
from rarp_replay.frames.ethernet import ETH_P_ARP, ETH_P_RARP, EthernetFrame, VlanTag

VM = bytes.fromhex("525400123456")
SWITCH = bytes.fromhex("02aabbccddee")
SWITCH_IP = IPv4Address("10.1.2.1")
VM_IP = IPv4Address("10.1.2.33")

# What QEMU's qemu_announce_self (net/announce.c) puts on the wire for
# 52:54:00:12:34:56, field by field.
QEMU_RARP = bytes.fromhex(
    "ffffffffffff"  # dst: broadcast
    "525400123456"  # src: the VM
    "8035"  # EtherType RARP
    "0001"  # htype Ethernet
    "0800"  # ptype IPv4
    "06"  # hlen
    "04"  # plen
    "0003"  # op: request reverse
    "525400123456"  # sha
    "00000000"  # spa
    "525400123456"  # tha
    "00000000"  # tpa
    "000000000000000000000000000000000000"  # 18 octets of padding to 60
)

UNICAST_ARP_REQUEST = bytes.fromhex(
    "525400123456"  # dst: the VM (unicast probe)
    "02aabbccddee"  # src: the switch
    "0806"  # EtherType ARP
    "0001"
    "0800"
    "06"
    "04"
    "0001"  # op: request
    "02aabbccddee"
    "0a010201"  # sha, spa 10.1.2.1
    "525400123456"
    "0a010221"  # tha, tpa 10.1.2.33
    "000000000000000000000000000000000000"
)


def test_constants() -> None:
    assert (HTYPE_ETHERNET, PTYPE_IPV4) == (1, 0x0800)
    assert [int(op) for op in ArpOp] == [1, 2, 3, 4]
    assert ArpOp.RARP_REQUEST.name == "RARP_REQUEST"


def test_qemu_rarp_exact_bytes() -> None:
    assert len(QEMU_RARP) == 60
    assert rarp_request_frame(VM) == QEMU_RARP


def test_qemu_rarp_parses() -> None:
    frame, packet = parse_arp_frame(QEMU_RARP)
    assert frame.ethertype == ETH_P_RARP
    assert frame.src == VM
    assert frame.vid is None
    assert packet == rarp_request(VM)
    assert packet.op == ArpOp.RARP_REQUEST
    assert packet.is_ethernet_ipv4
    assert packet.sender_ip == IPv4Address("0.0.0.0")
    assert packet.target_ip == IPv4Address("0.0.0.0")


def test_rarp_decoded_by_scapy() -> None:
    pkt = Ether(rarp_request_frame(VM))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"
    assert pkt.src == "52:54:00:12:34:56"
    assert pkt.type == ETH_P_RARP
    # scapy binds ARP only to 0x0806; the layout is the same (RFC 903), so decode by hand.
    arp = ARP(bytes(pkt.payload))
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 3)
    assert (arp.hwsrc, arp.psrc) == ("52:54:00:12:34:56", "0.0.0.0")
    assert (arp.hwdst, arp.pdst) == ("52:54:00:12:34:56", "0.0.0.0")


def test_tagged_rarp_frame() -> None:
    raw = rarp_request_frame(VM, vid=100)
    # Padding to 60 counts the tag, so the tag replaces 4 octets of padding.
    assert len(raw) == 60
    assert raw[:12] == QEMU_RARP[:12]
    assert raw[12:16] == bytes.fromhex("81000064")
    assert raw[16:] == QEMU_RARP[12:56]
    pkt = Ether(raw)
    assert pkt[Dot1Q].vlan == 100
    assert pkt[Dot1Q].type == ETH_P_RARP
    frame, packet = parse_arp_frame(raw)
    assert frame.vid == 100
    assert packet == rarp_request(VM)


def test_unicast_arp_request_exact_bytes() -> None:
    assert arp_request_frame(SWITCH, SWITCH_IP, VM, VM_IP) == UNICAST_ARP_REQUEST


def test_unicast_arp_request_decoded_by_scapy() -> None:
    pkt = Ether(arp_request_frame(SWITCH, SWITCH_IP, VM, VM_IP, vid=7))
    assert pkt.dst == "52:54:00:12:34:56"
    assert pkt.src == "02:aa:bb:cc:dd:ee"
    assert pkt[Dot1Q].vlan == 7
    arp = pkt[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 1)
    assert (arp.hwsrc, arp.psrc) == ("02:aa:bb:cc:dd:ee", "10.1.2.1")
    assert (arp.hwdst, arp.pdst) == ("52:54:00:12:34:56", "10.1.2.33")


def test_parse_scapy_arp_reply_with_padding() -> None:
    raw = bytes(
        Ether(dst="02:aa:bb:cc:dd:ee", src="52:54:00:12:34:56")
        / ARP(
            op=2,
            hwsrc="52:54:00:12:34:56",
            psrc="10.1.2.33",
            hwdst="02:aa:bb:cc:dd:ee",
            pdst="10.1.2.1",
        )
    ).ljust(60, b"\x00")
    frame, packet = parse_arp_frame(raw)
    assert frame.ethertype == ETH_P_ARP
    assert packet == arp_reply(VM, VM_IP, SWITCH, SWITCH_IP)
    assert packet.op == ArpOp.REPLY
    assert packet.sender_ip == VM_IP
    assert packet.target_ip == SWITCH_IP


def test_arp_request_constructor() -> None:
    packet = arp_request(SWITCH, SWITCH_IP, VM, VM_IP)
    assert packet == ArpPacket(1, SWITCH, SWITCH_IP.packed, VM, VM_IP.packed)
    assert packet.build() == UNICAST_ARP_REQUEST[14:42]
    assert ArpPacket.parse(packet.build()) == packet


def test_generic_layout_non_ethernet() -> None:
    # An IEEE 802 / IPv6-sized layout (hlen 8, plen 16) just to exercise the generic path.
    packet = ArpPacket(9, bytes(range(8)), bytes(range(16)), bytes(8), bytes(16), 6, 0x86DD)
    raw = packet.build()
    assert raw[:8] == bytes.fromhex("0006 86dd 08 10 0009")
    assert len(raw) == 8 + 2 * (8 + 16)
    parsed = ArpPacket.parse(raw + b"trailing")
    assert parsed == packet
    assert (parsed.hlen, parsed.plen) == (8, 16)
    assert not parsed.is_ethernet_ipv4
    with pytest.raises(InvalidFrameError):
        _ = parsed.sender_ip
    with pytest.raises(InvalidFrameError):
        _ = parsed.target_ip


@pytest.mark.parametrize(
    ("htype", "ptype", "hlen", "plen"),
    [(6, 0x0800, 6, 4), (1, 0x86DD, 6, 4), (1, 0x0800, 8, 4), (1, 0x0800, 6, 16)],
)
def test_is_ethernet_ipv4_false(htype: int, ptype: int, hlen: int, plen: int) -> None:
    packet = ArpPacket(1, bytes(hlen), bytes(plen), bytes(hlen), bytes(plen), htype, ptype)
    assert not packet.is_ethernet_ipv4


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 20, 27])
def test_parse_truncated(cut: int) -> None:
    with pytest.raises(TruncatedFrameError):
        ArpPacket.parse(UNICAST_ARP_REQUEST[14 : 14 + cut])


@pytest.mark.parametrize("lengths", ["0004", "0600", "0000"])
def test_parse_zero_address_length(lengths: str) -> None:
    raw = bytes.fromhex("00010800" + lengths + "0001") + bytes(40)
    with pytest.raises(InvalidFrameError):
        ArpPacket.parse(raw)


@pytest.mark.parametrize(
    "packet",
    [
        ArpPacket(1, VM, bytes(4), VM[:5], bytes(4)),
        ArpPacket(1, VM, bytes(4), VM, bytes(16)),
        ArpPacket(1, bytes(256), bytes(4), bytes(256), bytes(4)),
        ArpPacket(1, VM, bytes(256), VM, bytes(256)),
        ArpPacket(1, b"", bytes(4), b"", bytes(4)),
        ArpPacket(0x10000, VM, bytes(4), VM, bytes(4)),
        ArpPacket(1, VM, bytes(4), VM, bytes(4), htype=-1),
        ArpPacket(1, VM, bytes(4), VM, bytes(4), ptype=0x10000),
    ],
)
def test_build_rejects_inconsistent(packet: ArpPacket) -> None:
    with pytest.raises(InvalidFrameError):
        packet.build()


def test_constructors_reject_bad_macs() -> None:
    with pytest.raises(InvalidFrameError):
        rarp_request(VM[:5])
    with pytest.raises(InvalidFrameError):
        arp_request(SWITCH + b"\x00", SWITCH_IP, VM, VM_IP)
    with pytest.raises(InvalidFrameError):
        arp_reply(SWITCH, SWITCH_IP, b"", VM_IP)
    with pytest.raises(InvalidFrameError):
        rarp_request_frame(VM, vid=4096)


def test_parse_arp_frame_rejects_other_ethertypes() -> None:
    raw = EthernetFrame(VM, SWITCH, 0x86DD, bytes(46)).build()
    with pytest.raises(InvalidFrameError):
        parse_arp_frame(raw)


def test_parse_arp_frame_qinq() -> None:
    raw = EthernetFrame(
        b"\xff" * 6,
        VM,
        ETH_P_RARP,
        rarp_request(VM).build(),
        (VlanTag(10, tpid=0x88A8), VlanTag(20)),
    ).build()
    frame, packet = parse_arp_frame(raw)
    assert frame.vid == 20
    assert packet.sha == VM


@settings(max_examples=300, deadline=None)
@given(
    src_mac=st.binary(min_size=6, max_size=6),
    src_ip=st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address),
    dsts=st.lists(
        st.tuples(
            st.binary(min_size=6, max_size=6),
            st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address),
        ),
        min_size=1,
        max_size=3,
    ),
    tag=st.none() | st.integers(min_value=0, max_value=4095),
)
def test_arp_request_templates_are_the_frame_builders_bytes(
    src_mac: bytes, src_ip: IPv4Address, dsts: list[tuple[bytes, IPv4Address]], tag: int | None
) -> None:
    tpl = ArpRequestTemplate(src_mac, src_ip, tag)
    for dst_mac, dst_ip in dsts:  # one template, many probes
        want = arp_request_frame(src_mac, src_ip, dst_mac, dst_ip, vid=tag)
        assert tpl.frame(dst_mac, dst_ip) == want


def test_arp_request_template_rejects_a_bad_mac_like_the_builder() -> None:
    tpl = ArpRequestTemplate(SWITCH, SWITCH_IP)
    with pytest.raises(InvalidFrameError, match="ARP target MAC"):
        tpl.frame(VM[:5], VM_IP)
