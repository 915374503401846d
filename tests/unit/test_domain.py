"""Locality and L2-domain resolution of a RARP sighting."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from rarp_replay.domain import Domain, Ignored, resolve, source_address
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
