"""Token buckets, and the engine's rate limits and log suppression under floods."""

from __future__ import annotations

from rarp_replay.engine import Config, Engine, Log, SendFrame
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.ratelimit import KeyedBuckets, Rate, TokenBucket
from tests.support.topology import PORT, PORT2, VM_MAC, remote, switch


def test_bucket_spends_burst_then_refills_at_rate() -> None:
    b = TokenBucket(rate=10, burst=3)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.05)  # half a token
    assert b.take(0.1)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_bucket_ignores_clock_going_backwards() -> None:
    b = TokenBucket(rate=1, burst=1)
    assert b.take(10.0)
    assert not b.take(5.0) and not b.take(10.5)
    assert b.take(11.0)


def test_keyed_buckets_are_independent_and_idle_ones_forgotten() -> None:
    kb = KeyedBuckets(rate=1, burst=1)
    assert kb.take(1, 0.0) and not kb.take(1, 0.0) and kb.take(2, 0.0)
    kb.forget_idle(5.0)
    assert len(kb) == 0


def flood_mac(i: int) -> bytes:
    return bytes([0x52, 0x54, 0, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def test_flooding_port_is_capped_and_other_port_still_served() -> None:
    cfg = Config(port_rate=Rate(10, 20), global_rate=Rate(1000, 1000))
    eng = Engine(switch(remote("192.0.2.10")), cfg)
    lines = []
    for i in range(1000):  # random MACs from one port within 10 ms
        lines += eng.on_frame(rarp_request_frame(flood_mac(i)), PORT2, None, now=i * 1e-5)
    assert eng.stats["announcements"] == 20
    assert eng.stats["dropped.rate-limit-port"] == 980
    # Log lines stay bounded: the drop log has its own bucket.
    assert len([a for a in lines if isinstance(a, Log)]) <= 2 * cfg.drop_log_burst
    # The legitimate announcement on another port is served during the flood.
    out = eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, now=0.01)
    assert [a for a in out if isinstance(a, SendFrame)]


def test_probes_capped_globally_and_suppressed_count_reported() -> None:
    cfg = Config(probe_rate=Rate(1, 2), drop_log_burst=1)
    m = switch(*[remote(f"192.0.2.{i}") for i in range(10, 15)])
    eng = Engine(m, cfg)
    out = eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, now=0.0)
    assert len([a for a in out if isinstance(a, SendFrame)]) == 2
    assert eng.stats["dropped.rate-limit-probe"] == 3
    drops = [a for a in out if isinstance(a, Log) and a.event == "dropped"]
    assert len(drops) == 1  # the other two were suppressed...
    later = eng._drop("rate-limit-probe", PORT, 5.0)
    assert isinstance(later[0], Log) and later[0].fields["suppressed"] == 2  # ...and counted
