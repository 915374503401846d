"""Operator settings in the engine: port globs, and reconfiguring a live engine (SIGHUP)."""

from __future__ import annotations

from dataclasses import replace

from rarp_replay.engine import Config, Engine, Log, SendFrame
from rarp_replay.frames.arp import rarp_request_frame
from tests.support.topology import OTHER_MAC, PORT, PORT2, TRUNK_V10, VM_MAC, VX, remote, switch


def probes(actions: list) -> int:  # type: ignore[type-arg]
    return sum(1 for a in actions if isinstance(a, SendFrame))


def reasons(actions: list) -> list[object]:  # type: ignore[type-arg]
    return [a.fields["reason"] for a in actions if isinstance(a, Log) and a.event == "dropped"]


RARP = rarp_request_frame(VM_MAC)


def test_include_matches_port_or_svi() -> None:
    for include, served in [
        (("swp1",), {PORT}),
        (("swp*",), {PORT, PORT2}),
        (("br100",), {PORT, PORT2}),  # the SVI: every port of the VLAN
        (("swp2", "bond*"), {PORT2}),
    ]:
        for port in (PORT, PORT2):
            eng = Engine(switch(remote("192.0.2.10")), Config(include=include))
            actions = eng.on_frame(RARP, port, None, now=0.0)
            if port in served:
                assert probes(actions) == 1, (include, port)
            else:
                assert probes(actions) == 0 and reasons(actions) == ["excluded-port"]
                assert eng.stats["dropped.excluded-port"] == 1


def test_exclude_wins_over_include() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(include=("swp*",), exclude=("swp2",)))
    assert probes(eng.on_frame(RARP, PORT2, None, now=0.0)) == 0
    assert probes(eng.on_frame(RARP, PORT, None, now=0.0)) == 1
    eng = Engine(switch(remote("192.0.2.10")), Config(exclude=("br1*",)))
    assert probes(eng.on_frame(RARP, PORT, None, now=0.0)) == 0


def test_fabric_port_globs() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=("swp1*",)))
    actions = eng.on_frame(RARP, PORT, None, now=0.0)
    assert probes(actions) == 0 and reasons(actions) == ["fabric-port"]
    # A tagged sub-interface of a matching port is a different name: not matched.
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=("swp1",)))
    assert "fabric-port" not in reasons(eng.on_frame(RARP, TRUNK_V10, None, now=0.0))
    assert eng.stats["dropped.fabric-port"] == 0
    # VXLAN stays fabric whatever the globs say.
    eng = Engine(switch(remote("192.0.2.10")), Config(fabric_ports=()))
    assert reasons(eng.on_frame(RARP, VX, None, now=0.0)) == ["fabric-port"]


def test_reconfigure_keeps_rounds_and_holddown() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(holddown=5.0))
    assert probes(eng.on_frame(RARP, PORT, None, now=0.0)) == 1
    assert eng._rounds  # the VM has not answered: the round is open
    eng.reconfigure(replace(eng.config, holddown=10.0, include=("swp*",)))
    assert eng._rounds, "a reload must not drop rounds in flight"
    # Hold-down survives the reload and follows the new window.
    assert probes(eng.on_frame(RARP, PORT, None, now=7.0)) == 0
    assert eng.stats["dropped.duplicate"] == 1
    assert probes(eng.on_frame(RARP, PORT, None, now=10.5)) == 1
    # The new include list applies at once.
    eng.reconfigure(replace(eng.config, include=("nothing*",)))
    assert reasons(eng.on_frame(RARP, PORT2, None, now=30.0)) == ["excluded-port"]


def test_reconfigure_rate_limits() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(holddown=0.0, port_rate=1.0, port_burst=2.0))
    got = [probes(eng.on_frame(RARP, PORT, None, now=0.0)) for _ in range(3)]
    assert got == [1, 1, 0] and eng.stats["dropped.rate-limit-port"] == 1
    # Same limits again: the bucket keeps its (empty) state, no fresh burst.
    eng.reconfigure(replace(eng.config, holddown=0.0))
    assert probes(eng.on_frame(RARP, PORT, None, now=0.0)) == 0
    # New limits: a new bucket, with the new burst.
    eng.reconfigure(replace(eng.config, port_rate=1.0, port_burst=5.0))
    got = [probes(eng.on_frame(RARP, PORT, None, now=0.0)) for _ in range(6)]
    assert got == [1, 1, 1, 1, 1, 0]


def test_remote_target_refused_by_probe_limit_is_probed_later() -> None:
    # Two VMs behind EVPN remote entries, a probe bucket of one: the second
    # VM's probe is refused. It must still be probed once the bucket refills,
    # or its answer (and make-before-break) never comes.
    eng = Engine(
        switch(remote("192.0.2.10"), remote("192.0.2.11", mac=OTHER_MAC)),
        Config(probe_rate=1.0, probe_burst=1.0),
    )
    assert probes(eng.on_frame(RARP, PORT, None, now=0.0)) == 1
    other = eng.on_frame(rarp_request_frame(OTHER_MAC), PORT, None, now=0.0)
    assert probes(other) == 0 and reasons(other) == ["rate-limit-probe"]
    deadline = eng.next_deadline()
    assert deadline is not None and deadline < 1.0  # the retry, not the 30 s give-up
    later = eng.tick(1.5)
    sent = [a for a in later if isinstance(a, SendFrame)]
    assert [str(a.target) for a in sent] == ["192.0.2.11"]
    # Probed once: it then waits for the VM's answer or EVPN's withdrawal, no more.
    assert [a for a in eng.tick(20.0) if isinstance(a, SendFrame)] == []
