"""The neighbor/link/address mirror: indexing by MAC, tombstones, re-dumps."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from rarp_replay.netlink.records import NUD_FAILED, NUD_INCOMPLETE, Neighbor
from tests.support.topology import (
    BR,
    MACVLAN,
    OTHER_MAC,
    PORT,
    VM_MAC,
    gone,
    links,
    local,
    new,
    remote,
    switch,
)


def ips(bindings: list) -> set[str]:  # type: ignore[type-arg]
    return {str(b.address) for b in bindings}


def test_bindings_by_mac_on_given_interfaces_only() -> None:
    m = switch(
        remote("192.0.2.10"),
        remote("2001:db8:100::10"),
        local("192.0.2.11"),
        local("192.0.2.20", mac=OTHER_MAC),
        local("203.0.113.2", index=9),
    )
    assert ips(m.bindings(VM_MAC, [BR], 0)) == {"192.0.2.10", "2001:db8:100::10", "192.0.2.11"}
    assert ips(m.bindings(VM_MAC, [MACVLAN], 0)) == set()
    assert ips(m.bindings(OTHER_MAC, [BR], 0)) == {"192.0.2.20"}


def test_deleted_binding_is_remembered_then_forgotten() -> None:
    m = switch(remote("192.0.2.10"), remember=60)
    m.apply(gone(remote("192.0.2.10")), now=10)
    [b] = m.bindings(VM_MAC, [BR], now=20)
    assert not b.live and b.deleted_at == 10
    assert m.bindings(VM_MAC, [BR], now=71) == []
    m.expire(now=71)
    assert m.counts()["remembered"] == 0


def test_tombstone_superseded_when_ip_moves_to_another_mac() -> None:
    m = switch(local("192.0.2.10"))
    m.apply(new(local("192.0.2.10", mac=OTHER_MAC)), now=5)
    assert m.bindings(VM_MAC, [BR], now=6) == []
    assert ips(m.bindings(OTHER_MAC, [BR], now=6)) == {"192.0.2.10"}


def test_failed_entry_no_longer_binds_but_is_remembered() -> None:
    m = switch(local("192.0.2.10"))
    failed = Neighbor(2, BR, ip_address("192.0.2.10"), None, NUD_FAILED)
    m.apply(new(failed), now=3)
    [b] = m.bindings(VM_MAC, [BR], now=4)
    assert not b.live


def test_readded_binding_is_live_again() -> None:
    m = switch(remote("192.0.2.10"))
    m.apply(gone(remote("192.0.2.10")), now=1)
    m.apply(new(Neighbor(2, BR, ip_address("192.0.2.10"), None, NUD_INCOMPLETE)), now=2)
    m.apply(new(local("192.0.2.10")), now=3)
    [b] = m.bindings(VM_MAC, [BR], now=4)
    assert b.live


def test_redump_turns_vanished_entries_into_tombstones() -> None:
    m = switch(remote("192.0.2.10"), local("192.0.2.11"))
    vanished = m.reset([new(x) for x in links()], [], [new(local("192.0.2.11"))], now=7)
    assert vanished == 1
    got = {str(b.address): b.live for b in m.bindings(VM_MAC, [BR], now=8)}
    assert got == {"192.0.2.10": False, "192.0.2.11": True}


def test_link_deletion_drops_its_neighbors() -> None:
    m = switch(local("192.0.2.10"))
    m.apply(gone(m.links[BR]), now=1)
    assert BR not in m.links and m.neighbor(BR, ip_address("192.0.2.10")) is None
    assert MACVLAN not in m.uppers(BR) or m.links.get(BR) is None


def test_uppers_and_primary_address() -> None:
    m = switch()
    assert set(m.uppers(BR)) >= {MACVLAN}
    primary = m.primary_ipv4(BR)
    assert primary is not None and str(primary.address) == "192.0.2.252"
    assert m.primary_ipv4(PORT) is None


_MACS = [VM_MAC, OTHER_MAC, bytes.fromhex("525400000003")]
_IPS = ["192.0.2.10", "192.0.2.11", "2001:db8:100::10"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "del", "incomplete", "failed", "redump"]),
            st.sampled_from(_IPS),
            st.sampled_from(_MACS),
            st.sampled_from([BR, MACVLAN]),
        ),
        max_size=25,
    )
)
def test_live_bindings_are_the_current_entries(ops: list[tuple[str, str, bytes, int]]) -> None:
    """What Engine._initial_state relies on: a live binding is the table's entry for
    its key, so the engine need not look it up again."""
    m = switch()
    for now, (op, ip, mac, index) in enumerate(ops):
        if op == "new":
            m.apply(new(remote(ip, mac=mac, index=index)), float(now))
        elif op == "del":
            m.apply(gone(remote(ip, mac=mac, index=index)), float(now))
        elif op == "redump":
            m.reset([new(x) for x in links()], [], [new(n) for n in m.neighbors.values()], now)
        else:
            state = NUD_INCOMPLETE if op == "incomplete" else NUD_FAILED
            m.apply(new(local(ip, mac=mac, index=index, state=state)), float(now))
        for mac_ in _MACS:
            for b in m.bindings(mac_, (BR, MACVLAN), float(now)):
                if b.live:
                    assert b.neighbor.lladdr == mac_
                    assert m.neighbor(b.neighbor.index, b.address) is b.neighbor
