"""The problem the daemon exists for, reproduced without it.

After a live migration the destination leaf hears the RARP burst and learns
the VM's MAC (the MAC-only EVPN route moves), but the MAC/IP route is
withdrawn by the old leaf and never re-originated: the original design's
unicast ARP probe, sent from the new leaf after each RARP, is answered by the
VM and ignored by the new leaf's kernel (first because zebra's remote NOARP
entry is in the way, then because the answer is unsolicited, arp_accept=0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import netlab
from tests.support.fabric import VM_IP4, VM_MAC, VTEP, BgpWatch, EvpnFabric

pytestmark = pytest.mark.fabric

WATCH_SECONDS = 3.0


@pytest.fixture
def fabric(lab: netlab.Lab) -> Iterator[EvpnFabric]:
    fab = EvpnFabric(lab)
    try:
        yield fab
    finally:
        fab.close()


def _is_vm_arp_reply(frame: netlab.Frame) -> bool:
    data = frame.data
    return (
        not frame.outgoing
        and data[12:14] == b"\x08\x06"
        and data[20:22] == b"\x00\x02"
        and data[6:12] == bytes.fromhex(VM_MAC.replace(":", ""))
    )


def test_unicast_probe_after_rarp_does_not_restore_macip_route(fabric: EvpnFabric) -> None:
    fabric.learn_vm()
    assert fabric.neighbor("leaf2", VM_IP4).remote  # type: ignore[union-attr]

    vm_tx = fabric.vm.capture("eth0", lambda d: True)
    replug_done = fabric.migrate()
    # After the re-plug only the hypervisor's RARPs may speak for the VM.
    probes_seen_at_leaf2 = fabric.leaf2.capture("hv", lambda d: d[12:14] == b"\x08\x06")
    t0 = fabric.send_rarps("qemu", after_each=lambda _i: fabric.probe_from("leaf2", VM_IP4))
    assert not [f for f in vm_tx.matching() if f.outgoing and replug_done - 1 < f.timestamp < t0]

    # The VM answers every probe: the fault is in what the leaf does with the answers.
    probes_seen_at_leaf2.wait_for(5, timeout=2.0, match=_is_vm_arp_reply)

    deadline = t0 + WATCH_SECONDS
    leaf2_vtep = VTEP["leaf2"]
    while time.time() < deadline:
        neigh = fabric.neighbor("leaf2", VM_IP4)
        assert neigh is None or neigh.remote or "FAILED" in neigh.state, neigh
        assert not [
            r for r in fabric.macip_routes("leaf1") if r.ip == VM_IP4 and r.vtep == leaf2_vtep
        ]
        time.sleep(0.1)

    # The MAC did move: leaf1's zebra points it at leaf2's VTEP ...
    mac_on_leaf1 = fabric.evpn_macs("leaf1")[VM_MAC]
    assert mac_on_leaf1["type"] == "remote"
    assert mac_on_leaf1["remoteVtep"] == leaf2_vtep
    # ... and on the wire: leaf2 advertised the MAC only, leaf1 withdrew its
    # MAC/IP, and nobody advertised the VM's MAC/IP again.
    updates = [u for u in fabric.bgp.poll() if u.mac == VM_MAC and u.time >= t0]
    by_leaf = [(BgpWatch.leaf_of(u.sender), u.withdraw, u.ip) for u in updates]
    assert ("leaf2", False, None) in by_leaf
    assert ("leaf1", True, VM_IP4) in by_leaf
    assert not [u for u in updates if not u.withdraw and u.ip is not None]
    assert not [r for r in fabric.macip_routes("leaf2") if r.ip == VM_IP4]
