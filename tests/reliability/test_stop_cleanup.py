"""Nothing the daemon put in the neighbor table outlives it: SIGTERM in the middle of a
probe round, and SIGKILL followed by a restart.

A round's placeholders: the VM announces itself (RARP), EVPN withdraws its remote entries
(deleted here), and the daemon asks the kernel to resolve each address itself (`Resolve`,
RTM_NEWNEIGH with NTF_USE): an entry that is INCOMPLETE while the kernel solicits, FAILED
when nobody answers (this VM never does), and resolved again by the daemon's retries. Such
an entry binds nothing; left behind, it stays (below gc_thresh1, 128 entries, the kernel's
garbage collector removes nothing) and answers every lookup of the address with "failed".

tests/integration/test_daemon.py checks only that SIGTERM exits 0 with no round open;
this checks it with placeholders in either state, and what is left after SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.macaddr import format_mac
from rarp_replay.netlink.socket import RtnlSocket
from tests.support import netlab, relab
from tests.support.daemon_proc import DaemonProc

pytestmark = [pytest.mark.netns, pytest.mark.reliability]

VM = netlab.mac_of(0x5A, 1)
ADDRESSES = [relab.v4(10), relab.v4(11), relab.v6(10)]


def entries(s: relab.Switch, addresses: list[str]) -> dict[str, str]:
    """address -> its `ip -d neigh` line, for those of `addresses` present."""
    out: dict[str, str] = {}
    for line in s.neighbors():
        addr = line.split()[0]
        if addr in addresses:
            out[addr] = line
    return out


def open_round_with_placeholders(s: relab.Switch, d: DaemonProc, state: str) -> dict[str, str]:
    """RARP, then the withdrawal: the daemon resolves each address. Wait until every
    placeholder is in `state` (INCOMPLETE at once, FAILED ~3 s later: 3 solicitations,
    1 s apart) and return them."""
    tx = relab.rarp_sender(s.hosts["h1"])
    tx.send(rarp_request_frame(VM))
    tx.close()
    d.wait_event("announcement", lambda e: e["mac"] == format_mac(VM))
    s.batch(f"neigh del {a} dev {relab.SVI}" for a in ADDRESSES)
    d.wait_event("remote-deleted", count=len(ADDRESSES))

    def placeholders() -> dict[str, str] | None:
        got = entries(s, ADDRESSES)
        if len(got) == len(ADDRESSES) and all(state in line for line in got.values()):
            return got
        return None

    found: dict[str, str] = netlab.wait_until(
        placeholders, timeout=10, interval=0.05, what=f"{state} placeholders"
    )
    # They are the daemon's, and say so (NDA_PROTOCOL, as its takeover entries do).
    assert all(f"proto {relab.NEIGH_PROTOCOL}" in line for line in found.values()), found
    return found


@pytest.fixture
def switch(lab: netlab.Lab) -> relab.Switch:
    s = relab.Switch.build(lab, ports=1)
    s.batch(relab.Switch.remote_line(a, VM) for a in ADDRESSES)
    return s


@pytest.mark.parametrize("state", ["INCOMPLETE", "FAILED"])
def test_sigterm_mid_round_exits_zero_and_removes_placeholders(
    switch: relab.Switch, state: str
) -> None:
    d = DaemonProc(switch.sw).ready()
    open_round_with_placeholders(switch, d, state)
    assert d.stop() == 0
    assert entries(switch, ADDRESSES) == {}
    [stopped] = d.of("stopped")
    assert stopped["signal"] == "SIGTERM" and stopped["resolves"] >= len(ADDRESSES)
    # Cut short by the stop, not given up: the give-up time never ran out.
    assert stopped["cut-short"] == len(ADDRESSES) and "gave-up" not in stopped, stopped


def test_sigkill_mid_round_then_restart_leaves_nothing_behind(
    switch: relab.Switch, figures: Callable[[str], None]
) -> None:
    # Entries the daemon must leave alone at start-up: a takeover entry (REACHABLE, ours:
    # the VM's proven binding, which EVPN advertises), EVPN's remote entry, a static one,
    # and an unresolved entry that is not ours.
    other = netlab.mac_of(0x5B, 1)
    keep = {
        relab.v4(20): f"lladdr {format_mac(other)} nud reachable proto {relab.NEIGH_PROTOCOL}",
        relab.v4(21): f"lladdr {format_mac(other)} nud noarp extern_learn proto zebra",
        relab.v4(22): f"lladdr {format_mac(other)} nud permanent",
    }
    switch.batch(f"neigh replace {a} dev {relab.SVI} {rest}" for a, rest in keep.items())
    # An unresolved entry that is not ours: the kernel's own resolution (no protocol).
    theirs = relab.v4(23)
    keep[theirs] = ""
    with netlab.entered(switch.sw.name):
        rtnl = RtnlSocket()
    rtnl.neigh_use(switch.sw.ifindex(relab.SVI), theirs)
    rtnl.close()
    d = DaemonProc(switch.sw, "--holddown", "0").ready()
    left = open_round_with_placeholders(switch, d, "INCOMPLETE")
    os.kill(d.proc.pid, signal.SIGKILL)
    assert d.proc.wait(timeout=5) == -signal.SIGKILL
    # Nothing cleaned them up: the kernel fails them (~3 s) and then keeps them.
    assert set(entries(switch, ADDRESSES)) == set(left)

    started = time.monotonic()
    d2 = DaemonProc(switch.sw, "--holddown", "0").ready()
    [cleanup] = d2.wait_event("placeholders-removed")
    assert cleanup["count"] == len(ADDRESSES)
    netlab.wait_until(
        lambda: not entries(switch, ADDRESSES), timeout=5, what="leftover placeholders gone"
    )
    cleared = time.monotonic() - started
    # The others are untouched (the takeover entry may have aged REACHABLE -> STALE).
    kept = entries(switch, list(keep))
    assert set(kept) == set(keep), kept
    assert f"proto {relab.NEIGH_PROTOCOL}" in kept[relab.v4(20)]

    # And the restarted daemon serves: the VM's binding is back (EVPN re-installed it).
    switch.batch([relab.Switch.remote_line(ADDRESSES[0], VM)])
    vm_side = relab.probe_tap(switch.hosts["h1"], "eth0", outgoing=False)
    tx = relab.rarp_sender(switch.hosts["h1"])
    tx.send(rarp_request_frame(VM))
    tx.close()
    vm_side.wait_for(match=lambda f: f[0:6] == VM and relab.arp_target(f) == ADDRESSES[0])
    vm_side.close()
    assert d2.stop() == 0
    figures(
        f"SIGKILL + restart: {len(left)} leftover placeholders removed at start-up, gone "
        f"{cleared:.2f} s after the restart was launched"
    )


def test_resolving_an_existing_entry_does_not_claim_it(lab: netlab.Lab) -> None:
    """The start-up clean-up trusts NDA_PROTOCOL 82 to mean "made by this daemon": a
    `Resolve` of an entry that already exists (the kernel's own, learned or failed)
    must re-validate it without stamping it, while one it creates carries 82."""
    s = relab.Switch.build(lab, ports=1)
    mine, learned, failed = relab.v4(30), relab.v4(31), relab.v4(32)
    s.batch([f"neigh replace {learned} lladdr {format_mac(VM)} dev {relab.SVI} nud stale"])
    index = s.sw.ifindex(relab.SVI)
    with netlab.entered(s.sw.name):
        rtnl = RtnlSocket()
    try:
        rtnl.neigh_use(index, failed)  # the kernel's own resolution: no protocol
        for address in (mine, learned, failed):
            rtnl.neigh_use(index, address, protocol=relab.NEIGH_PROTOCOL)
    finally:
        rtnl.close()
    got = entries(s, [mine, learned, failed])
    assert f"proto {relab.NEIGH_PROTOCOL}" in got[mine], got
    assert "proto" not in got[learned] and format_mac(VM) in got[learned], got
    assert "proto" not in got[failed], got
