"""`takeover-delay`: a takeover held back while the old leaf's withdrawal may still come.

Both orders (the withdrawal first: no takeover, the engine resolves as on any
withdrawal; the delay first: the takeover, late), what the round's log and counters
say about which happened, and the paths that end a hold without either (a reload
turning takeover off, a new round after the hold-down, give-up, shutdown).
Why the option exists: tests/fabric/NOTES.md section g."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

from rarp_replay import config, control
from rarp_replay.counters import CUT_SHORT, GAVE_UP, TAKEOVERS, TAKEOVERS_WITHHELD
from rarp_replay.engine import Config, Engine, Resolve, Takeover
from rarp_replay.mirror import Mirror
from tests.support.topology import BR, PORT, VM_MAC, gone, local, new, remote, switch
from tests.unit.test_engine import arp_reply_from_vm, logs, rarp, sends

IP = "192.0.2.10"
ADDR = ip_address(IP)


def held(delay: float = 0.5, **kw: object) -> tuple[Mirror, Engine]:
    """A round for the VM whose address EVPN still holds as remote, and the VM's answer
    at 10 ms: the takeover is held for `delay`."""
    m = switch(remote(IP))
    eng = Engine(m, Config(takeover_delay=delay, **kw))  # type: ignore[arg-type]
    eng.on_frame(rarp(), PORT, None, now=0.0)
    acts = eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.01)
    assert not [a for a in acts if isinstance(a, Takeover)]
    [hold] = logs(acts, "takeover-held")
    assert hold.fields["address"] == IP and hold.fields["delay_ms"] == delay * 1000
    assert hold.fields["after_ms"] == 10.0
    return m, eng


def takeovers(actions: list) -> list[Takeover]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, Takeover)]


def test_default_holds_the_takeover_for_one_second_and_is_one_constant() -> None:
    # The default holds (FRR 8.4.0-8.4.4 loses a third leaf's client on make-before-break:
    # tests/fabric/NOTES.md g), and the daemon's setting is the engine's constant.
    assert Config().takeover_delay == 1.0
    assert config.Settings().takeover_delay == Config().takeover_delay
    m = switch(remote(IP))
    eng = Engine(m)
    eng.on_frame(rarp(), PORT, None, now=0.0)
    acts = eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.01)
    assert takeovers(acts) == []
    [hold] = logs(acts, "takeover-held")
    assert hold.fields["delay_ms"] == 1000.0 and hold.fields["after_ms"] == 10.0
    assert eng.next_deadline() == 1.01
    # The old leaf withdraws at 110 ms (the two-leaf lab's ~100 ms): no takeover, a resolve.
    ev = gone(remote(IP))
    m.apply(ev, 0.11)
    acts = eng.on_netlink(ev, 0.11)
    assert Resolve(BR, ADDR) in acts
    [deleted] = logs(acts, "remote-deleted")
    assert deleted.fields["takeover"] == "withheld" and deleted.fields["held_ms"] == 100.0
    assert takeovers(eng.tick(1.01)) == []
    assert eng.stats[TAKEOVERS] == 0 and eng.stats[TAKEOVERS_WITHHELD] == 1


def test_default_takes_over_after_one_second_if_the_withdrawal_never_comes() -> None:
    # The old leaf dead, or a withdrawal that never comes (FRR #21473): the wait is bounded.
    eng = Engine(switch(remote(IP)))
    eng.on_frame(rarp(), PORT, None, now=0.0)
    assert takeovers(eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.01)) == []
    assert takeovers(eng.tick(1.009)) == []
    acts = eng.tick(1.01)
    assert takeovers(acts) == [Takeover(BR, ADDR, VM_MAC, 82)]
    assert logs(acts, "takeover")[0].fields["held_ms"] == 1000.0


def test_zero_delay_takes_over_at_once() -> None:
    eng = Engine(switch(remote(IP)), Config(takeover_delay=0.0))
    eng.on_frame(rarp(), PORT, None, now=0.0)
    acts = eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.01)
    assert takeovers(acts) == [Takeover(BR, ADDR, VM_MAC, 82)]
    assert "held_ms" not in logs(acts, "takeover")[0].fields
    assert not logs(acts, "takeover-held")


def test_withdrawal_within_the_delay_means_no_takeover_and_a_resolve() -> None:
    m, eng = held(0.5)
    assert eng.next_deadline() == 0.51  # the hold's end, before give-up (30 s)
    assert eng.tick(0.3) == []
    ev = gone(remote(IP))  # the old leaf withdrew at 110 ms
    m.apply(ev, 0.11)
    acts = eng.on_netlink(ev, 0.11)
    assert Resolve(BR, ADDR) in acts and len(sends(acts)) == 1
    [deleted] = logs(acts, "remote-deleted")
    assert deleted.fields["takeover"] == "withheld" and deleted.fields["held_ms"] == 100.0
    # The hold's time comes and goes: nothing is taken over.
    assert takeovers(eng.tick(0.51)) == []
    assert takeovers(eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.52)) == []
    ok = new(local(IP))  # the kernel learned the VM from its solicited answer
    m.apply(ok, 0.112)
    assert logs(eng.on_netlink(ok, 0.112), "confirmed")
    assert eng.stats[TAKEOVERS] == 0 and eng.stats[TAKEOVERS_WITHHELD] == 1
    assert eng.rounds() == []


def test_delay_running_out_takes_over_late() -> None:
    m, eng = held(0.5)
    # A second answer (the VM answers a retry, or its NA and ARP cross) keeps the clock.
    assert eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.2) == []
    assert eng.next_deadline() == 0.51
    assert takeovers(eng.tick(0.509)) == []
    acts = eng.tick(0.51)
    assert takeovers(acts) == [Takeover(BR, ADDR, VM_MAC, 82)]
    [took] = logs(acts, "takeover")
    assert took.fields["held_ms"] == 500.0 and took.fields["after_ms"] == 510.0
    assert eng.stats[TAKEOVERS] == 1 and eng.stats[TAKEOVERS_WITHHELD] == 0
    assert eng.next_deadline() == 30.0  # only give-up is left: no second takeover
    assert takeovers(eng.tick(1.0)) == []
    ok = new(local(IP))  # our write shows up as a local REACHABLE entry
    m.apply(ok, 0.52)
    assert logs(eng.on_netlink(ok, 0.52), "confirmed")


def test_control_plane_reinstall_during_the_hold_keeps_it() -> None:
    m, eng = held(0.5)
    again = new(remote(IP))  # zebra rewrites its remote entry (e.g. a refresh)
    m.apply(again, 0.1)
    assert eng.on_netlink(again, 0.1) == []
    assert takeovers(eng.tick(0.51)) == [Takeover(BR, ADDR, VM_MAC, 82)]


def test_reload_turning_takeover_off_ends_the_hold_without_taking_over() -> None:
    m, eng = held(0.5)
    eng.reconfigure(replace(eng.config, takeover=False))
    assert takeovers(eng.tick(0.51)) == []
    ev = gone(remote(IP))
    m.apply(ev, 0.8)
    acts = eng.on_netlink(ev, 0.8)
    assert Resolve(BR, ADDR) in acts
    assert "takeover" not in logs(acts, "remote-deleted")[0].fields
    assert eng.stats[TAKEOVERS] == 0 and eng.stats[TAKEOVERS_WITHHELD] == 0


def test_reload_changing_the_delay_keeps_the_hold_in_flight() -> None:
    _, eng = held(0.5)
    eng.reconfigure(replace(eng.config, takeover_delay=5.0))
    assert takeovers(eng.tick(0.51)) == [Takeover(BR, ADDR, VM_MAC, 82)]


def test_new_round_after_the_holddown_drops_the_old_hold() -> None:
    _, eng = held(6.0, holddown=5.0)
    eng.on_frame(rarp(), PORT, None, now=5.5)  # the VM migrated again: a new round
    assert takeovers(eng.tick(6.01)) == []  # the old round's hold died with it
    acts = eng.on_frame(arp_reply_from_vm(IP), PORT, None, 5.6)
    assert logs(acts, "takeover-held") and not takeovers(acts)
    assert takeovers(eng.tick(11.6)) == [Takeover(BR, ADDR, VM_MAC, 82)]
    assert eng.stats[TAKEOVERS] == 1


def test_give_up_before_the_delay_ends_gives_up() -> None:
    _, eng = held(5.0, give_up=2.0)
    acts = eng.tick(2.0)
    assert logs(acts, "gave-up") and not takeovers(acts)
    assert eng.rounds() == [] and eng.stats[GAVE_UP] == 1
    assert eng.next_deadline() is None and eng.stats[TAKEOVERS] == 0


def test_shutdown_during_the_hold_takes_nothing_over() -> None:
    _, eng = held(0.5)
    # No resolve was made (the remote entry was in the way): no placeholder to remove.
    assert eng.shutdown() == []
    assert eng.stats[CUT_SHORT] == 1 and eng.stats[TAKEOVERS] == 0
    assert eng.tick(0.51) == [] and eng.rounds() == []


def test_timeline_shows_the_hold_and_how_it_ended() -> None:
    for withdrawn in (True, False):
        m = switch(remote(IP))
        eng = Engine(m, Config(takeover_delay=0.5))
        hist = control.History()
        hist.feed(eng.on_frame(rarp(), PORT, None, now=0.0), 0.0)
        hist.feed(eng.on_frame(arp_reply_from_vm(IP), PORT, None, 0.01), 0.01)
        if withdrawn:
            ev = gone(remote(IP))
            m.apply(ev, 0.11)
            hist.feed(eng.on_netlink(ev, 0.11), 0.11)
        else:
            hist.feed(eng.tick(0.51), 0.51)
        [rec] = [r for rounds in hist._by_mac.values() for r in rounds]
        events = {e["event"]: e for e in rec.events()}
        assert events["takeover-held"]["at_ms"] == 10.0
        if withdrawn:
            assert events["remote-deleted"]["takeover"] == "withheld"
            assert "takeover" not in events
        else:
            assert events["takeover"]["held_ms"] == 500.0
            assert "remote-deleted" not in events
