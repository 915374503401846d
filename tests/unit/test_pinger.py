"""The arithmetic of a client's pings across a migration (tests/support/pinger.py)."""

from __future__ import annotations

import pytest

from tests.support.pinger import echo_request, parse_echo_reply, ping_outcome


def _every_10ms(
    start: float, stop: float, lost: tuple[float, float] = (0, 0)
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    sent, replies = [], []
    n = 0
    t = start
    while t < stop:
        n += 1
        sent.append((n, t))
        if not lost[0] <= t < lost[1]:
            replies.append((n, t + 0.001))
        t = start + n * 0.01
    return sent, replies


def test_downtime_counts_from_t0_to_first_reply_to_an_echo_sent_after_the_move() -> None:
    # Moved at 1.0, first RARP at 1.2, replies lost from 0.995 until 1.35.
    sent, replies = _every_10ms(0.0, 3.0, lost=(0.995, 1.35))
    out = ping_outcome(sent, replies, moved=1.0, t0=1.2, end=3.0, timeout=1.0)
    assert out.restored
    assert out.downtime == pytest.approx(0.151, abs=1e-6)
    assert out.longest_gap == pytest.approx(0.36, abs=1e-6)
    assert (out.sent, out.received) == (len(sent), len(replies))


def test_a_reply_to_an_echo_sent_before_the_move_proves_nothing() -> None:
    # The echo sent at 0.99 is answered at 1.5 (say, queued): it must not count.
    sent = [(1, 0.99), (2, 1.2)]
    replies = [(1, 1.5)]
    out = ping_outcome(sent, replies, moved=1.0, t0=1.1, end=4.0, timeout=2.0)
    assert not out.restored
    assert out.downtime is None
    assert out.longest_gap == pytest.approx(2.5)  # from the last reply to the end


def test_late_reply_is_not_restored_but_has_a_downtime() -> None:
    sent, replies = _every_10ms(0.0, 6.0, lost=(1.0, 4.5))
    out = ping_outcome(sent, replies, moved=1.0, t0=1.1, end=6.0, timeout=2.0)
    assert not out.restored
    assert out.downtime == pytest.approx(3.401, abs=1e-6)


def test_never_answered_gap_runs_from_first_echo() -> None:
    out = ping_outcome([(1, 0.0), (2, 0.01)], [], moved=0.5, t0=0.6, end=2.0, timeout=1.0)
    assert (out.restored, out.downtime, out.received) == (False, None, 0)
    assert out.longest_gap == pytest.approx(2.0)


@pytest.mark.parametrize("ipv6", [False, True])
def test_echo_reply_parsing(ipv6: bool) -> None:
    req = echo_request(0x1234, 7, ipv6)
    reply = bytes([129 if ipv6 else 0]) + req[1:]
    if not ipv6:
        reply = bytes([0x45]) + bytes(19) + reply  # a raw ICMP socket gets the IP header
    assert parse_echo_reply(reply, 0x1234, ipv6) == 7
    assert parse_echo_reply(reply, 0x1235, ipv6) is None
    assert parse_echo_reply(reply[:5], 0x1234, ipv6) is None


def test_stable_from_is_after_the_last_long_gap() -> None:
    # Back at 1.2, lost again from 1.4 to 1.9 (the withdrawal before the new route), then fine.
    sent, replies = _every_10ms(0.0, 3.0, lost=(0.995, 1.2))
    replies = [(n, t) for n, t in replies if not 1.4 <= t < 1.9]
    out = ping_outcome(sent, replies, moved=1.0, t0=1.1, end=3.0, timeout=1.0)
    assert out.restored
    assert out.downtime == pytest.approx(0.101, abs=1e-6)
    assert out.stable_from == pytest.approx(0.801, abs=1e-6)


def test_stable_from_equals_downtime_without_a_later_gap() -> None:
    sent, replies = _every_10ms(0.0, 3.0, lost=(0.995, 1.35))
    out = ping_outcome(sent, replies, moved=1.0, t0=1.2, end=3.0, timeout=1.0)
    assert out.stable_from == out.downtime
