"""Locality and L2-domain resolution of a RARP sighting."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rarp_replay.domain import Domain, Ignored, resolve, source_address
from rarp_replay.mirror import Mirror
from rarp_replay.netlink.records import Address
from tests.support.topology import (
    BR,
    BR_VLAN,
    MACVLAN,
    PORT,
    ROUTED,
    SVI_MAC,
    TRUNK,
    TRUNK_V10,
    VX,
    new,
    switch,
)


def test_access_port_resolves_to_bridge_svi_with_stacked_macvlan() -> None:
    d = resolve(switch(), PORT, None)
    assert isinstance(d, Domain)
    assert d.key == (BR, 0) and d.egress == BR and d.egress_mac == SVI_MAC
    assert d.l3 == (BR, MACVLAN) and d.tag is None and d.port == PORT


@pytest.mark.parametrize(
    ("ifindex", "vid", "reason"),
    [
        (VX, None, "fabric-port"),
        (BR, None, "bridge-copy"),
        (MACVLAN, None, "stacked-copy"),
        (TRUNK, 10, "vlan-parent-copy"),
        (999, None, "unknown-interface"),
    ],
)
def test_copies_and_fabric_are_ignored(ifindex: int, vid: int | None, reason: str) -> None:
    d = resolve(switch(), ifindex, vid)
    assert isinstance(d, Ignored) and d.reason == reason


def test_fabric_port_by_name() -> None:
    d = resolve(switch(), PORT, None, fabric_ports=frozenset({"swp1"}))
    assert isinstance(d, Ignored) and d.reason == "fabric-port"


def test_vlan_subinterface_port_of_bridge() -> None:
    # swp10.10 is a bridge port: the untagged copy seen there is the ingress.
    d = resolve(switch(), TRUNK_V10, None)
    assert isinstance(d, Domain) and d.key == (BR, 0) and d.port == TRUNK_V10


def test_tagged_frame_uses_vlan_device_of_bridge() -> None:
    d = resolve(switch(), PORT, 20)
    assert isinstance(d, Domain)
    assert d.egress == BR_VLAN and d.tag is None and d.key == (BR, 20)


def test_tagged_frame_without_vlan_device_is_tagged_by_hand() -> None:
    d = resolve(switch(), PORT, 30)
    assert isinstance(d, Domain)
    assert d.egress == BR and d.tag == 30 and d.key == (BR, 30) and d.name == "br100/vlan30"


def test_priority_tag_is_untagged() -> None:
    d = resolve(switch(), PORT, 0)
    assert isinstance(d, Domain) and d.tag is None and d.key == (BR, 0)


def test_routed_port_is_its_own_domain() -> None:
    d = resolve(switch(), ROUTED, None)
    assert isinstance(d, Domain) and d.egress == ROUTED and d.l3 == (ROUTED,)


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("192.0.2.10", "192.0.2.252"),  # SVI subnet beats the macvlan's equal prefix
        ("198.51.100.10", "198.51.100.252"),  # secondary subnet
        ("198.51.100.200", "198.51.100.129"),  # longest prefix wins (/25 over /24)
        ("10.9.9.9", "192.0.2.252"),  # no match: primary, never 0.0.0.0
        ("2001:db8:100::10", "2001:db8:100::252"),
        ("2001:db8:999::10", "fe80::1"),  # no prefix match: link-local
    ],
)
def test_source_address(target: str, source: str) -> None:
    m = switch()
    d = resolve(m, PORT, None)
    assert isinstance(d, Domain)
    assert str(source_address(m, d, ip_address(target))) == source


def test_no_ipv4_source_means_none() -> None:
    m = switch()
    m.addresses[BR] = {}
    m.addresses[MACVLAN] = {}
    d = resolve(m, PORT, None)
    assert isinstance(d, Domain)
    assert source_address(m, d, ip_address("192.0.2.10")) is None


def test_macvlan_address_used_when_svi_has_none() -> None:
    m = switch()
    m.addresses[BR] = {}
    d = resolve(m, PORT, None)
    assert isinstance(d, Domain)
    assert str(source_address(m, d, ip_address("192.0.2.10"))) == "192.0.2.1"


def _reference_source(
    m: Mirror, d: Domain, target: IPv4Address | IPv6Address
) -> IPv4Address | IPv6Address | None:
    """The selection as it was written with ip_network objects (before prefixes_of)."""
    best, best_len = None, -1
    for ifindex in d.l3:
        for a in m.addresses_of(ifindex):
            if a.address.version != target.version:
                continue
            if target.version == 6 and a.address.is_link_local:
                continue
            net = ip_network((a.address, a.prefixlen), strict=False)
            if target in net and a.prefixlen > best_len:
                best, best_len = a, a.prefixlen
        if best is not None:
            return best.address
    # No prefix matched: the primary IPv4 address, or the IPv6 link-local.
    for ifindex in d.l3:
        if target.version == 4:
            primary = m.primary_ipv4(ifindex)
            if primary is not None:
                return primary.address
        else:
            for a in m.addresses_of(ifindex):
                if a.address.version == 6 and a.address.is_link_local:
                    return a.address
    return None


@given(
    prefixes=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.booleans()), max_size=6
    ),
    target=st.integers(0, 2**32 - 1),
    v6=st.integers(0, 2**128 - 1),
    v6_len=st.integers(0, 128),
)
def test_source_address_is_the_longest_prefix_match(
    prefixes: list[tuple[int, int, bool]], target: int, v6: int, v6_len: int
) -> None:
    m = switch()
    for raw, plen, on_macvlan in prefixes:
        where = MACVLAN if on_macvlan else BR
        m.apply(new(Address(where, IPv4Address(raw), plen)), 1.0)
    m.apply(new(Address(BR, IPv6Address(v6), v6_len)), 1.0)
    d = resolve(m, PORT, None)
    assert isinstance(d, Domain)
    for t in (IPv4Address(target), IPv6Address(v6 ^ 1), IPv6Address(target)):
        want = _reference_source(m, d, t)
        got = source_address(m, d, t)
        assert got == want, (t, got, want)
