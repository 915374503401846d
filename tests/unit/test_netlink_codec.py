"""The rtnetlink codec: hand-built and captured bytes, round trips, hostile input."""

from __future__ import annotations

import contextlib
import errno
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rarp_replay.errors import NetlinkError
from rarp_replay.netlink import codec as c
from rarp_replay.netlink.records import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    IFA_F_NODAD,
    IFF_UP,
    NTF_EXT_LEARNED,
    NTF_MASTER,
    NTF_USE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    RT_SCOPE_LINK,
    Address,
    BridgePort,
    BridgeVlan,
    Change,
    Event,
    Link,
    Neighbor,
    VlanTunnel,
)

MAC = bytes.fromhex("525400000010")

# --- hand-building helpers (independent of the encoder under test) ----------------------------


def attr(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * (-length % 4)


def msg(msg_type: int, body: bytes, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, flags, seq, pid) + body + b"\0" * (-length % 4)


def ndmsg(family: int, index: int, state: int, flags: int = 0, ntype: int = 1) -> bytes:
    return struct.pack("=BxxxiHBB", family, index, state, flags, ntype)


def ifinfomsg(index: int, flags: int = 0, family: int = 0) -> bytes:
    return struct.pack("=BxHiII", family, 1, index, flags, 0)


def ifaddrmsg(family: int, prefixlen: int, flags: int, scope: int, index: int) -> bytes:
    return struct.pack("=BBBBI", family, prefixlen, flags, scope, index)


def only(buf: bytes) -> tuple[int, int, int, memoryview]:
    (m,) = list(c.iter_messages(buf))
    return m


def decode_msg(buf: bytes) -> Event | None:
    msg_type, _flags, _seq, body = only(buf)
    return c.decode(msg_type, body)


# --- captured from the kernel -----------------------------------------------------------------

# `ip neigh replace 192.0.2.10 lladdr 52:54:00:00:00:10 dev br0 nud noarp extern_learn
# proto 186`, dumped from a 6.18 kernel: ndmsg + NDA_DST, NDA_LLADDR, NDA_PROBES,
# NDA_CACHEINFO, NDA_PROTOCOL.
KERNEL_NEIGH = bytes.fromhex(
    "540000001c00020001000000d526000002000000020000004000100108000100c000020a0a000200"
    "52540000001000000800040000000000140003000a0000000a0000000a0000000000000005000c00"
    "ba000000"
)


def test_kernel_neighbor_message_decodes() -> None:
    msg_type, flags, seq, body = only(KERNEL_NEIGH)
    assert (msg_type, flags, seq) == (c.RTM_NEWNEIGH, c.NLM_F_MULTI, 1)
    assert c.decode(msg_type, body) == Event(
        Change.NEW,
        Neighbor(AF_INET, 2, IPv4Address("192.0.2.10"), MAC, NUD_NOARP, NTF_EXT_LEARNED, 186),
    )


# --- hand-built messages ----------------------------------------------------------------------


def test_ipv6_neighbor_with_extended_flags() -> None:
    body = (
        ndmsg(AF_INET6, 7, NUD_REACHABLE, NTF_EXT_LEARNED | 0x80)
        + attr(c.NDA_DST, IPv6Address("2001:db8::10").packed)
        + attr(c.NDA_LLADDR, MAC)
        + attr(c.NDA_CACHEINFO, bytes(16))
        + attr(c.NDA_FLAGS_EXT, struct.pack("=I", c.NTF_EXT_MANAGED))
        + attr(c.NDA_PROTOCOL, b"\x0b")
    )
    event = decode_msg(msg(c.RTM_DELNEIGH, body))
    assert event == Event(
        Change.DEL,
        Neighbor(
            AF_INET6,
            7,
            IPv6Address("2001:db8::10"),
            MAC,
            NUD_REACHABLE,
            NTF_EXT_LEARNED | 0x80 | c.NTF_MANAGED,
            11,
        ),
    )


def test_incomplete_neighbor_has_no_lladdr() -> None:
    body = ndmsg(AF_INET, 3, 0x01) + attr(c.NDA_DST, bytes([192, 0, 2, 9]))
    event = decode_msg(msg(c.RTM_NEWNEIGH, body))
    assert event is not None
    assert event.record == Neighbor(AF_INET, 3, IPv4Address("192.0.2.9"), None, 0x01)


def test_bridge_fdb_entry() -> None:
    # A VXLAN FDB entry: NDA_DST is the remote VTEP, not the entry's key.
    body = (
        ndmsg(AF_BRIDGE, 9, NUD_NOARP, NTF_MASTER | NTF_EXT_LEARNED)
        + attr(c.NDA_LLADDR, MAC)
        + attr(c.NDA_DST, bytes([198, 51, 100, 7]))
        + attr(c.NDA_MASTER, struct.pack("=I", 4))
        + attr(c.NDA_VLAN, struct.pack("=H", 10))
        + attr(c.NDA_VNI, struct.pack("=I", 100))
    )
    event = decode_msg(msg(c.RTM_NEWNEIGH, body))
    assert event == Event(
        Change.NEW,
        Neighbor(AF_BRIDGE, 9, None, MAC, NUD_NOARP, NTF_MASTER | NTF_EXT_LEARNED, 0, 4, 10),
    )


def test_link_with_nested_linkinfo_vlan() -> None:
    info = attr(
        c.IFLA_LINKINFO | c.NLA_F_NESTED,
        attr(c.IFLA_INFO_KIND, b"vlan\0")
        + attr(
            c.IFLA_INFO_DATA | c.NLA_F_NESTED,
            attr(2, struct.pack("=HH", 0, 0))  # IFLA_VLAN_FLAGS: skipped
            + attr(c.IFLA_VLAN_ID, struct.pack("=H", 10)),
        )
        + attr(c.IFLA_INFO_SLAVE_KIND, b"bridge\0"),
    )
    body = (
        ifinfomsg(12, IFF_UP | 0x1000)
        + attr(c.IFLA_IFNAME, b"br0.10\0")
        + attr(c.IFLA_ADDRESS, MAC)
        + attr(c.IFLA_MTU, struct.pack("=I", 1500))
        + attr(c.IFLA_LINK, struct.pack("=I", 3))
        + attr(c.IFLA_MASTER, struct.pack("=I", 5))
        + info
        + attr(c.IFLA_LINK_NETNSID, struct.pack("=i", 1))
    )
    event = decode_msg(msg(c.RTM_NEWLINK, body))
    assert event == Event(
        Change.NEW, Link(12, "br0.10", IFF_UP | 0x1000, MAC, "vlan", "bridge", 5, 3, 10, 1)
    )
    assert event.record.is_up  # type: ignore[union-attr]


def test_vlan_id_attribute_ignored_for_other_kinds() -> None:
    # IFLA_INFO_DATA type 1 is IFLA_VXLAN_ID for a vxlan device: not a VLAN id.
    info = attr(
        c.IFLA_LINKINFO,
        attr(c.IFLA_INFO_KIND, b"vxlan\0")
        + attr(c.IFLA_INFO_DATA, attr(1, struct.pack("=I", 100))),
    )
    event = decode_msg(msg(c.RTM_NEWLINK, ifinfomsg(4) + attr(c.IFLA_IFNAME, b"vx0\0") + info))
    assert event is not None
    assert event.record == Link(4, "vx0", kind="vxlan")


def test_bridge_port_link_messages_are_not_links() -> None:
    # br_ifinfo_notify: RTM_DELLINK with AF_BRIDGE means "left the bridge", not "deleted":
    # it decodes to a BridgePort (the port's VLAN state), never to a Link.
    body = ifinfomsg(6, family=AF_BRIDGE) + attr(c.IFLA_IFNAME, b"veth0\0")
    for msg_type, change in ((c.RTM_DELLINK, Change.DEL), (c.RTM_NEWLINK, Change.NEW)):
        event = decode_msg(msg(msg_type, body))
        assert event is not None and not isinstance(event.record, Link)
        assert event == Event(change, BridgePort(6, "veth0"))


def test_ipv4_address_prefers_ifa_local() -> None:
    # A point-to-point address: IFA_LOCAL is ours, IFA_ADDRESS the peer's.
    body = (
        ifaddrmsg(AF_INET, 32, 0x80, 0, 5)
        + attr(c.IFA_ADDRESS, bytes([10, 0, 0, 2]))
        + attr(c.IFA_LOCAL, bytes([10, 0, 0, 1]))
        + attr(c.IFA_LABEL, b"ppp0\0")
    )
    event = decode_msg(msg(c.RTM_NEWADDR, body))
    assert event == Event(Change.NEW, Address(5, IPv4Address("10.0.0.1"), 32, 0, 0x80))
    # Without IFA_LOCAL, IFA_ADDRESS is used.
    body = ifaddrmsg(AF_INET, 24, 0, 0, 5) + attr(c.IFA_ADDRESS, bytes([10, 0, 0, 3]))
    event = decode_msg(msg(c.RTM_DELADDR, body))
    assert event == Event(Change.DEL, Address(5, IPv4Address("10.0.0.3"), 24))


def test_ipv6_address_flags_from_ifa_flags() -> None:
    body = (
        ifaddrmsg(AF_INET6, 64, 0x80, RT_SCOPE_LINK, 3)
        + attr(c.IFA_ADDRESS, IPv6Address("fe80::1").packed)
        + attr(c.IFA_CACHEINFO, bytes(16))
        + attr(c.IFA_FLAGS, struct.pack("=I", 0x380))  # IFA_F_NOPREFIXROUTE (0x200) etc.
    )
    event = decode_msg(msg(c.RTM_NEWADDR, body))
    assert event == Event(Change.NEW, Address(3, IPv6Address("fe80::1"), 64, RT_SCOPE_LINK, 0x380))


@pytest.mark.parametrize(
    ("msg_type", "body"),
    [
        (c.RTM_NEWNEIGH, ndmsg(99, 1, 0) + attr(c.NDA_DST, bytes(4))),  # unknown family
        (c.RTM_NEWADDR, ifaddrmsg(99, 8, 0, 0, 1)),
        (24, bytes(28)),  # RTM_NEWROUTE: not ours
        (c.NLMSG_DONE, bytes(4)),
    ],
)
def test_unknown_types_and_families_decode_to_none(msg_type: int, body: bytes) -> None:
    assert c.decode(msg_type, body) is None


@pytest.mark.parametrize(
    ("msg_type", "body"),
    [
        (c.RTM_NEWNEIGH, ndmsg(AF_INET, 1, 0)[:8]),  # truncated fixed header
        (c.RTM_NEWNEIGH, ndmsg(AF_INET, 1, 0)),  # no NDA_DST
        (c.RTM_NEWNEIGH, ndmsg(AF_INET, 1, 0) + attr(c.NDA_DST, bytes(16))),  # wrong length
        (c.RTM_NEWNEIGH, ndmsg(AF_INET6, 1, 0) + attr(c.NDA_DST, bytes(4))),
        (c.RTM_NEWNEIGH, ndmsg(AF_BRIDGE, 1, 0) + attr(c.NDA_MASTER, b"\1\0")),  # short u32
        (c.RTM_NEWNEIGH, ndmsg(AF_INET, 1, 0) + struct.pack("=HH", 40, 1) + bytes(4)),
        (c.RTM_NEWLINK, ifinfomsg(1) + struct.pack("=HH", 2, 3)),  # attribute len < 4
        (c.RTM_NEWADDR, ifaddrmsg(AF_INET, 24, 0, 0, 1)),  # no address at all
    ],
)
def test_malformed_bodies_raise_netlink_error(msg_type: int, body: bytes) -> None:
    with pytest.raises(NetlinkError):
        c.decode(msg_type, body)


# --- framing and attributes -------------------------------------------------------------------


def test_iter_messages_walks_aligned_messages() -> None:
    first = msg(c.RTM_NEWNEIGH, b"\1\2\3\4\5", flags=c.NLM_F_MULTI, seq=7)  # padded to 24
    assert len(first) == 24
    buf = first + msg(c.NLMSG_DONE, struct.pack("=i", 0), flags=c.NLM_F_MULTI, seq=7)
    got = [(t, f, s, bytes(b)) for t, f, s, b in c.iter_messages(buf)]
    assert got == [
        (c.RTM_NEWNEIGH, c.NLM_F_MULTI, 7, b"\1\2\3\4\5"),
        (c.NLMSG_DONE, c.NLM_F_MULTI, 7, bytes(4)),
    ]
    # The last message need not carry its padding.
    assert [bytes(b) for *_, b in c.iter_messages(first[:21])] == [b"\1\2\3\4\5"]
    assert list(c.iter_messages(b"")) == []


@pytest.mark.parametrize(
    "buf",
    [
        bytes(15),  # shorter than a header
        struct.pack("=IHHII", 15, 3, 0, 0, 0),  # length smaller than the header
        struct.pack("=IHHII", 40, 3, 0, 0, 0) + bytes(8),  # length past the end
        msg(3, bytes(4)) + b"\1\0\0",  # trailing garbage
    ],
)
def test_iter_messages_rejects_bad_framing(buf: bytes) -> None:
    with pytest.raises(NetlinkError):
        list(c.iter_messages(buf))


def test_parse_attrs_strips_flag_bits_and_aligns() -> None:
    body = (
        b"HEAD"
        + attr(c.IFLA_IFNAME, b"ab\0")  # 7 bytes, padded to 8
        + attr(c.IFLA_LINKINFO | c.NLA_F_NESTED, attr(1, b"x\0"))
        + attr(7 | c.NLA_F_NET_BYTEORDER, b"\0\x50")
        + attr(9, b"")
    )
    attrs = c.parse_attrs(body, 4)
    assert {k: bytes(v) for k, v in attrs.items()} == {
        c.IFLA_IFNAME: b"ab\0",
        c.IFLA_LINKINFO: attr(1, b"x\0"),
        7: b"\0\x50",
        9: b"",
    }
    nested = c.parse_attrs(attrs[c.IFLA_LINKINFO])
    assert bytes(nested[1]) == b"x\0"
    # A tail shorter than an attribute header is padding (nla_for_each_attr ignores it).
    assert c.parse_attrs(b"\0\0") == {}
    with pytest.raises(NetlinkError):
        c.parse_attrs(body, len(body) + 1)
    with pytest.raises(NetlinkError):
        c.parse_attrs(struct.pack("=HH", 12, 1) + b"abcd")


# --- errors and acks --------------------------------------------------------------------------


def test_nlmsg_error_decodes_to_errno() -> None:
    request = struct.pack("=IHHII", 40, c.RTM_DELNEIGH, 5, 9, 0)
    buf = msg(c.NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + request + bytes(24))
    msg_type, flags, _seq, body = only(buf)
    assert msg_type == c.NLMSG_ERROR
    assert c.decode_error(body, flags) == (errno.ENOENT, None)
    # A plain acknowledgment.
    assert c.decode_error(struct.pack("=i", 0) + request) == (0, None)


def test_nlmsg_error_with_extended_ack() -> None:
    request_header = struct.pack("=IHHII", 48, c.RTM_NEWNEIGH, 0x405, 3, 0)
    tlvs = attr(c.NLMSGERR_ATTR_MSG, b"Invalid neighbor state\0") + attr(
        c.NLMSGERR_ATTR_OFFS, struct.pack("=I", 20)
    )
    capped = struct.pack("=i", -errno.EINVAL) + request_header + tlvs
    flags = c.NLM_F_CAPPED | c.NLM_F_ACK_TLVS
    assert c.decode_error(capped, flags) == (errno.EINVAL, "Invalid neighbor state")
    # Uncapped: the whole 48-byte request is echoed before the attributes.
    full = struct.pack("=i", -errno.EINVAL) + request_header + bytes(32) + tlvs
    assert c.decode_error(full, c.NLM_F_ACK_TLVS) == (errno.EINVAL, "Invalid neighbor state")
    with pytest.raises(NetlinkError):
        c.decode_error(b"\0\0")


# --- encoders and requests --------------------------------------------------------------------


def test_encode_matches_kernel_layout() -> None:
    record = Neighbor(AF_INET, 2, IPv4Address("192.0.2.10"), MAC, NUD_NOARP, NTF_EXT_LEARNED, 186)
    wire = c.encode(record, c.RTM_NEWNEIGH, c.NLM_F_MULTI, 1)
    assert decode_msg(wire) == decode_msg(KERNEL_NEIGH)
    assert len(wire) % 4 == 0
    assert struct.unpack_from("=I", wire)[0] == len(wire)
    deleted = c.encode(Event(Change.DEL, record))
    assert only(deleted)[0] == c.RTM_DELNEIGH


@pytest.mark.parametrize(
    ("record", "msg_type"),
    [
        (Neighbor(AF_BRIDGE, 1, IPv4Address("192.0.2.1"), MAC), None),
        (Neighbor(AF_INET, 1, IPv6Address("::1"), MAC), None),
        (Neighbor(AF_INET, 1, None, MAC), None),
        (Neighbor(99, 1, None, MAC), None),
        (Neighbor(AF_INET, 1, IPv4Address("192.0.2.1"), MAC, state=1 << 16), None),
        (Link(1, "eth0", vlan_id=10), None),
        (Link(1, "a\0b"), None),
        (Address(1, IPv4Address("192.0.2.1"), 24), c.RTM_NEWLINK),
    ],
)
def test_encode_rejects_unrepresentable_records(
    record: Neighbor | Link | Address, msg_type: int | None
) -> None:
    with pytest.raises(NetlinkError, match=r"."):
        c.encode(record, msg_type)


def test_dump_requests_carry_the_right_header() -> None:
    for msg_type, size in ((c.RTM_GETLINK, 16), (c.RTM_GETADDR, 8), (c.RTM_GETNEIGH, 12)):
        wire = c.dump_request(msg_type, AF_BRIDGE, seq=42)
        t, flags, seq, body = only(wire)
        assert (t, flags, seq, len(body)) == (
            msg_type,
            c.NLM_F_REQUEST | c.NLM_F_DUMP,
            42,
            size,
        )
        assert body[0] == AF_BRIDGE


def test_neigh_request_replace_use_delete() -> None:
    addr = ip_address("2001:db8::5")
    wire = c.neigh_request(
        c.RTM_NEWNEIGH,
        index=4,
        address=addr,
        lladdr=MAC,
        state=NUD_PERMANENT,
        flags=NTF_EXT_LEARNED,
        protocol=186,
        seq=3,
    )
    t, flags, seq, body = only(wire)
    assert (t, seq) == (c.RTM_NEWNEIGH, 3)
    assert flags == c.NLM_F_REQUEST | c.NLM_F_ACK | c.NLM_F_CREATE | c.NLM_F_REPLACE
    assert c.decode(t, body) == Event(
        Change.NEW, Neighbor(AF_INET6, 4, addr, MAC, NUD_PERMANENT, NTF_EXT_LEARNED, 186)
    )

    use = c.neigh_request(c.RTM_NEWNEIGH, index=4, address=ip_address("192.0.2.3"), flags=NTF_USE)
    t, _flags, _seq, body = only(use)
    assert c.decode(t, body) == Event(
        Change.NEW, Neighbor(AF_INET, 4, IPv4Address("192.0.2.3"), None, 0, NTF_USE)
    )
    with pytest.raises(NetlinkError, match="NTF_USE"):
        c.neigh_request(c.RTM_NEWNEIGH, index=4, address=addr, lladdr=MAC, flags=NTF_USE)

    delete = c.neigh_request(c.RTM_DELNEIGH, index=4, address=addr)
    t, flags, _seq, body = only(delete)
    assert (t, flags) == (c.RTM_DELNEIGH, c.NLM_F_REQUEST | c.NLM_F_ACK)
    with pytest.raises(NetlinkError, match="neighbor request"):
        c.neigh_request(c.RTM_GETNEIGH, index=4, address=addr)


def test_set_seq() -> None:
    wire = c.dump_request(c.RTM_GETNEIGH, AF_INET, seq=1)
    t, flags, seq, body = only(c.set_seq(wire, 77, c.NLM_F_ACK))
    assert (t, flags, seq) == (c.RTM_GETNEIGH, c.NLM_F_REQUEST | c.NLM_F_DUMP | c.NLM_F_ACK, 77)
    assert bytes(body) == bytes(only(wire)[3])
    with pytest.raises(NetlinkError):
        c.set_seq(b"short", 1)


# --- round trips ------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
s32 = st.integers(-(2**31), 2**31 - 1)
opt_u32 = st.none() | u32
names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)
macs = st.binary(max_size=32)
ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address)


@st.composite
def links(draw: st.DrawFn) -> Link:
    kind = draw(st.none() | st.sampled_from(["bridge", "vxlan", "vlan", "macvlan", "veth"]) | names)
    return Link(
        index=draw(s32),
        name=draw(names),
        flags=draw(u32),
        mac=draw(st.none() | macs),
        kind=kind,
        slave_kind=draw(st.none() | st.just("bridge") | names),
        master=draw(opt_u32),
        lower=draw(opt_u32),
        vlan_id=draw(st.none() | st.integers(0, 0xFFFF)) if kind == "vlan" else None,
        link_netnsid=draw(st.none() | s32),
        vlan_filtering=draw(st.none() | st.booleans()) if kind == "bridge" else None,
    )


@st.composite
def vid_ranges(draw: st.DrawFn) -> tuple[int, int]:
    vid = draw(st.integers(1, 4094))
    return vid, draw(st.integers(vid, 4094))


@st.composite
def bridge_ports(draw: st.DrawFn) -> BridgePort:
    flags = st.integers(0, 0xFFFF).map(lambda f: f & ~0x18)  # RANGE_* bits are the wire's
    vlans = [BridgeVlan(*draw(vid_ranges()), draw(flags)) for _ in range(draw(st.integers(0, 5)))]
    tunnels = []
    for _ in range(draw(st.integers(0, 3))):
        vid, last = draw(vid_ranges())
        tunnels.append(VlanTunnel(vid, last, draw(st.integers(0, 2**32 - 1 - (last - vid)))))
    return BridgePort(draw(s32), draw(names), draw(opt_u32), tuple(vlans), tuple(tunnels))


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    v6 = draw(st.booleans())
    address: IPv4Address | IPv6Address = draw(ipv6) if v6 else draw(ipv4)
    return Address(
        index=draw(u32),
        address=address,
        prefixlen=draw(st.integers(0, 128 if v6 else 32)),
        scope=draw(st.integers(0, 255)),
        flags=draw(u32 | st.just(IFA_F_NODAD)),
    )


@st.composite
def neighbors(draw: st.DrawFn) -> Neighbor:
    family = draw(st.sampled_from([AF_INET, AF_INET6, AF_BRIDGE]))
    address: IPv4Address | IPv6Address | None = None  # AF_BRIDGE: an FDB entry
    if family == AF_INET:
        address = draw(ipv4)
    elif family == AF_INET6:
        address = draw(ipv6)
    return Neighbor(
        family=family,
        index=draw(s32),
        address=address,
        lladdr=draw(st.none() | macs),
        state=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 2**40 - 1)),
        protocol=draw(st.integers(0, 255)),
        master=draw(opt_u32),
        vlan=draw(st.none() | st.integers(0, 0xFFFF)),
    )


@given(
    record=links() | addresses() | neighbors() | bridge_ports(),
    change=st.sampled_from(Change),
    seq=u32,
    flags=st.integers(0, 0xFFFF),
)
def test_round_trip(
    record: Link | Address | Neighbor | BridgePort, change: Change, seq: int, flags: int
) -> None:
    event = Event(change, record)
    wire = c.encode(event, None, flags, seq)
    msg_type, got_flags, got_seq, body = only(wire)
    assert (got_flags, got_seq) == (flags, seq)
    assert c.decode(msg_type, body) == event


@given(
    v6=st.booleans(),
    raw=st.binary(min_size=16, max_size=16),
    index=s32,
    state=st.integers(0, 0xFFFF),
    flags=st.integers(0, 2**40 - 1),
    lladdr=st.none() | st.binary(min_size=6, max_size=6) | macs,
    protocol=st.integers(0, 255),
    probes=u32,
    cacheinfo=st.binary(min_size=16, max_size=16),
)
def test_kernel_attribute_layout(
    *,
    v6: bool,
    raw: bytes,
    index: int,
    state: int,
    flags: int,
    lladdr: bytes | None,
    protocol: int,
    probes: int,
    cacheinfo: bytes,
) -> None:
    """Messages laid out as neigh_fill_info() writes them, with and without the optional
    attributes: the one-unpack fast path and the general loop must agree."""
    family, dst = (AF_INET6, raw) if v6 else (AF_INET, raw[:4])
    body = ndmsg(family, index, state, flags & 0xFF) + attr(c.NDA_DST, dst)
    if lladdr is not None:
        body += attr(c.NDA_LLADDR, lladdr)
    body += attr(c.NDA_PROBES, struct.pack("=I", probes)) + attr(c.NDA_CACHEINFO, cacheinfo)
    if protocol:
        body += attr(c.NDA_PROTOCOL, bytes([protocol]))
    if flags >> 8:
        body += attr(c.NDA_FLAGS_EXT, struct.pack("=I", flags >> 8))
    address = IPv6Address(dst) if v6 else IPv4Address(dst)
    expected = Neighbor(family, index, address, lladdr, state, flags, protocol)
    assert c.decode(c.RTM_NEWNEIGH, body) == Event(Change.NEW, expected)
    # Within a larger buffer too (decode_span reads in place).
    framed = b"\xff" * 8 + body + b"\xee" * 8
    assert c.decode_span(c.RTM_NEWNEIGH, framed, 8, 8 + len(body)) == Event(Change.NEW, expected)


# --- hostile input ----------------------------------------------------------------------------

DECODABLE_TYPES = [
    c.RTM_NEWLINK,
    c.RTM_DELLINK,
    c.RTM_NEWADDR,
    c.RTM_DELADDR,
    c.RTM_NEWNEIGH,
    c.RTM_DELNEIGH,
]


def exercise(buf: bytes) -> None:
    """Everything a receiver would do with `buf`; only NetlinkError may escape."""
    with contextlib.suppress(NetlinkError):
        for msg_type, flags, _seq, body in c.iter_messages(buf):
            if msg_type == c.NLMSG_ERROR:
                c.decode_error(body, flags)
            else:
                c.decode(msg_type, body)
    for msg_type in DECODABLE_TYPES:
        with contextlib.suppress(NetlinkError):
            c.decode(msg_type, buf)
    for offset in (0, 4, 8, 12, 16):
        with contextlib.suppress(NetlinkError):
            c.parse_attrs(buf, offset)
    for flags in (0, c.NLM_F_ACK_TLVS, c.NLM_F_ACK_TLVS | c.NLM_F_CAPPED):
        with contextlib.suppress(NetlinkError):
            c.decode_error(buf, flags)


@given(st.binary(max_size=256))
def test_random_bytes_raise_only_netlink_error(buf: bytes) -> None:
    exercise(buf)


VALID_MESSAGES = [
    KERNEL_NEIGH,
    c.encode(Link(3, "br0.10", 1, MAC, "vlan", "bridge", 1, 2, 10, 0)),
    c.encode(Address(3, IPv4Address("192.0.2.1"), 24, 0, 0x80)),
    c.encode(Address(3, IPv6Address("2001:db8::1"), 64, 0, 0x80)),
    c.encode(Neighbor(AF_BRIDGE, 9, None, MAC, NUD_NOARP, NTF_MASTER, 0, 4, 10)),
    c.encode(Neighbor(AF_INET6, 9, IPv6Address("fe80::1"), MAC, 2, c.NTF_MANAGED, 4)),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(VALID_MESSAGES),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 400),
)
def test_mutated_messages_raise_only_netlink_error(
    base: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    buf = bytearray(base)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    mutated = bytes(buf)
    exercise(mutated)
    exercise(mutated[: cut % (len(mutated) + 1)])
    exercise(mutated + mutated)
