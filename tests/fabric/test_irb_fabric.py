"""Routed clients and a silent VM across a live migration, three FRR leaves with an anycast
gateway (issue 14), on the host kernel: the `traditional` layout of tests/support/irbfabric
(asymmetric IRB, per-VNI traditional bridges). The VLAN-aware layouts need a guest's kernel:
tests/vm/test_irb_fabric.py.

What is judged is what a user feels: the clients' pings to the VM (tests/support/pinger),
then the fabric's state that explains it (leaf3's BGP routes and zebra's MAC entry), and
the old leaf's SVI staying silent towards the VM.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import netlab
from tests.support.irbfabric import (
    VM_IP4,
    VM_IP6,
    VTEP,
    IrbFabric,
    assert_restored_by_new_leaf,
    explain,
)

pytestmark = pytest.mark.fabric

# The routes are back ~70 ms after the first RARP on the host (the daemon's make-before-
# break); 3 s is room for a loaded machine while the no-daemon case stays short.
RESTORE_TIMEOUT = 3.0


@pytest.fixture
def fabric(lab: netlab.Lab) -> Iterator[IrbFabric]:
    fab = IrbFabric(lab, "traditional")
    try:
        yield fab
    finally:
        fab.close()


def test_every_client_gets_the_vm_back_with_the_daemon(fabric: IrbFabric) -> None:
    fabric.start_daemons()
    m = fabric.measure_migration(timeout=RESTORE_TIMEOUT)
    assert (m.old, m.new) == ("leaf1", "leaf2")
    assert_restored_by_new_leaf(fabric, m)


def test_without_the_daemon_the_third_leafs_client_loses_the_vm(fabric: IrbFabric) -> None:
    # The problem reproduced: the old leaf withdraws the MAC/IP route, leaf3's zebra
    # deletes its entry, and leaf3's own ARP request / NS for the VM is answered to the
    # anycast MAC, which the new leaf consumes. Only the MAC moved.
    m = fabric.measure_migration(timeout=RESTORE_TIMEOUT)
    for family in ("v4", "v6"):
        out = m.clients[f"client3/{family}"]
        assert not out.restored, explain(fabric, m)
    assert not m.routes_leaf3, explain(fabric, m)
    assert m.zebra_mac_leaf3["remoteVtep"] == VTEP["leaf2"]
    for ip in (VM_IP4, VM_IP6):
        assert not fabric.remote_neighbor("leaf3", ip)
