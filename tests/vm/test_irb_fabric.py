"""Routed clients and a silent VM across a live migration, on three FRR leaves laid out as
Cumulus Linux and SONiC lay them out (symmetric IRB: SVIs in a VRF with L3VNI 4001, an
anycast gateway on every leaf): issue 14, in the guests' kernels (VLAN filtering, 802.1Q,
VRF, macvlan, team). The lab is tests/support/irbfabric.py; the host runs its traditional
layout (tests/fabric/test_irb_fabric.py).

SONiC traps no RARP to the CPU: there the daemon learns of the move only from the FDB entry
fdbsyncd writes once the ASIC saw the VM's first frame, and t0 is that write.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import netlab
from tests.support.irbfabric import IrbFabric, assert_restored_by_new_leaf
from tests.vm.vlanlab import START, kernel_lacks

pytestmark = [pytest.mark.vm, pytest.mark.fabric]

# Host: ~70 ms from the first RARP. Scaled by TIME_SCALE in the guest (TCG).
RESTORE_TIMEOUT = 3.0


@pytest.fixture(params=["cumulus", "sonic"])
def fabric(request: pytest.FixtureRequest) -> Iterator[IrbFabric]:
    lab = netlab.Lab()
    try:
        missing = kernel_lacks(
            lab,
            ("link", "add", "vrf9", "type", "vrf", "table", "9"),
            ("link", "add", "link", "vlan10", "name", "v0", "type", "macvlan", "mode", "private"),
            ("link", "add", "pc", "type", "team"),
        )
        if missing is not None:
            pytest.skip(f"needs VLAN filtering, 802.1Q, VRF, macvlan and team ({missing})")
        fab = IrbFabric(lab, request.param, start_timeout=60.0)
        try:
            yield fab
        finally:
            fab.close()
    finally:
        lab.close()


def test_every_client_gets_the_vm_back(fabric: IrbFabric) -> None:
    fabric.start_daemons(timeout=START)
    m = fabric.measure_migration(timeout=RESTORE_TIMEOUT)
    assert (m.old, m.new) == ("leaf1", "leaf2")
    assert_restored_by_new_leaf(fabric, m)
