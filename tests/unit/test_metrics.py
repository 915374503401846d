"""The metrics collector and its key table, driven with a real engine: no sockets."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import rarp_replay
from rarp_replay import config, counters, errors, metrics
from rarp_replay.cli.rarp_reply import build_parser
from rarp_replay.config import Settings
from rarp_replay.engine import Engine
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.metrics import COUNTERS, PREFIX, STATS, EngineCollector
from rarp_replay.netlink.records import AF_INET, NUD_REACHABLE, Neighbor
from tests.support.prometheus import samples
from tests.support.topology import BR, OTHER_MAC, PORT, VM_MAC, gone, local, new, remote, switch

SRC = Path(rarp_replay.__file__).parent


def scrape(collector: EngineCollector) -> dict[str, float]:
    """Exposition text -> {'name{label="value",...}': value}, as Prometheus would see it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return samples(generate_latest(registry).decode())


def series(key: str) -> str:
    """The exposed series of an engine stats key, per the table."""
    target = STATS[key]
    assert target is not None
    name, values = target
    labels = ",".join(f'{k}="{v}"' for k, v in zip(COUNTERS[name].labels, values, strict=True))
    return f"{PREFIX}{name}_total" + (f"{{{labels}}}" if labels else "")


# -- the key table ------------------------------------------------------------------


def _counted_names(module: str) -> list[tuple[str, ast.expr]]:
    """(what, expression) for every counter key, drop reason, ignored reason and
    trigger `module` writes: `stats[...]` keys, `_drop(...)`'s and `Ignored(...)`'s
    first argument, `trigger=` keywords, `reason` / `result` log fields."""
    found: list[tuple[str, ast.expr]] = []
    for node in ast.walk(ast.parse((SRC / module).read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "stats"
        ):
            found.append(("key", node.slice))
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("_drop", "_log_allowed") and node.args:
                found.append(("reason", node.args[0]))
            if name == "Ignored" and node.args:
                found.append(("ignored", node.args[0]))
            found += [("trigger", kw.value) for kw in node.keywords if kw.arg == "trigger"]
        if isinstance(node, ast.Dict):
            found += [
                ("reason", v)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and k.value in ("reason", "result")
            ]
    return found


def _value(expr: ast.expr, params: dict[str, tuple[object, ...]]) -> set[object]:
    """The values `expr` can take: a name from `counters`, a `counters` table looked
    up with such a name, or a parameter that carries one (`params`). Anything else,
    a string literal first of all, fails: every name is written in `counters` only."""
    if isinstance(expr, ast.Name):
        if expr.id in params:
            return set(params[expr.id])
        assert hasattr(counters, expr.id), f"{expr.id} is not a name from counters"
        return {getattr(counters, expr.id)}
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
        table = getattr(counters, expr.value.id)
        assert isinstance(table, dict), expr.value.id
        if isinstance(expr.slice, ast.Attribute) and expr.slice.attr == "version":
            return set(table.values())  # an IP address's version: 4 or 6, each in the table
        return {table[v] for v in _value(expr.slice, params)}
    if isinstance(expr, ast.Call) and getattr(expr.func, "id", None) == "dropped":
        return {counters.dropped(r) for r in _value(expr.args[0], params)}  # type: ignore[arg-type]
    if isinstance(expr, ast.Attribute) and expr.attr == "reason":
        # A Drop's (frames.capture) or an Ignored's (domain) reason: checked where
        # each is written (_source_keys).
        return set(counters.DROP_REASONS)
    raise AssertionError(f"not a name from counters: {ast.unparse(expr)}")


def _source_keys() -> set[str]:
    """Every Engine.stats key the engine, the daemon and domain.resolve() can produce,
    checking on the way that each key, reason and trigger is a name from `counters`."""
    ignored = set()
    for what, expr in _counted_names("domain.py"):
        assert what == "ignored", ast.unparse(expr)
        ignored |= _value(expr, {})
    assert ignored | {counters.EXCLUDED_PORT} == set(counters.IGNORED)
    # The capture's reasons: frames.capture.classify returns them as Drop(reason).
    drops: set[object] = set()
    for node in ast.walk(ast.parse((SRC / "frames" / "capture.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Drop":
            drops |= _value(node.args[0], {})
    assert drops == set(counters.FRAME_DROPS), drops ^ set(counters.FRAME_DROPS)
    # The parameters that pass a name through: _drop's and _log_allowed's reason
    # (checked at each call), announce's trigger (checked at each call), the
    # reason of a domain.resolve() verdict.
    params: dict[str, tuple[object, ...]] = {
        "reason": counters.DROP_REASONS,
        "trigger": counters.TRIGGERS,
    }
    keys: set[str] = set()
    for module in ("engine.py", "daemon.py"):
        for what, expr in _counted_names(module):
            if what == "reason" and isinstance(expr, ast.Attribute) and expr.attr == "reason":
                continue  # where.reason: an Ignored's, checked in domain.py above
            values = _value(expr, params)
            if what == "key":
                keys |= values  # type: ignore[arg-type]
            elif what == "trigger":
                assert values <= set(counters.TRIGGERS), values
            else:
                assert values <= set(counters.DROP_REASONS), values
    return keys


def test_every_stats_key_the_code_produces_is_mapped_and_no_other() -> None:
    produced = _source_keys()
    assert len(produced) > 30  # the scan found them, not nothing
    assert produced <= counters.keys(), produced - counters.keys()
    assert produced - set(STATS) == set(), "map these keys in metrics.STATS"
    assert counters.keys() - set(STATS) == set(), "map these keys in metrics.STATS"
    assert set(STATS) - counters.keys() == set(), "stale keys in metrics.STATS"


def test_reasons_and_triggers_are_written_only_in_counters() -> None:
    """Anywhere in the package (a module that classifies frames included), a reason or
    a trigger is a name from `counters`, not a string of its own; only a log event
    may be the same word (the `duplicate` event of a duplicate announcement)."""
    words = {*counters.DROP_REASONS, *counters.SKIP_REASONS, *counters.TRIGGERS}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "counters.py":
            continue
        tree = ast.parse(path.read_text())
        events = {
            id(node.args[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and node.args
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("_log", "Log")
        }
        found += [
            f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in words and id(node) not in events
        ]
    assert found == []


def test_each_key_has_its_own_series_and_known_metric() -> None:
    targets = [t for t in STATS.values() if t is not None]
    assert len(targets) == len(set(targets))
    for name, values in targets:
        assert len(values) == len(COUNTERS[name].labels), name
    assert {name for name, _ in targets} | {metrics.UNMAPPED} == set(COUNTERS)


def test_every_series_is_exported_at_zero_before_anything_happens() -> None:
    got = scrape(EngineCollector(Engine(switch())))
    for key, target in STATS.items():
        if target is not None:
            assert got[series(key)] == 0, key
    assert got[f"{PREFIX}rounds_active"] == 0
    assert got[f'{PREFIX}confirmation_seconds_bucket{{le="+Inf"}}'] == 0
    # No capture open yet: its kernel counters are there, at zero.
    assert got[f"{PREFIX}capture_kernel_received_total"] == 0
    assert got[f"{PREFIX}capture_kernel_drops_total"] == 0
    version = rarp_replay.__version__
    assert got[f'{PREFIX}build_info{{python="{sys.version.split()[0]}",version="{version}"}}'] == 1


def test_every_mirror_count_has_its_gauge() -> None:
    assert set(switch().counts()) == set(metrics.MIRROR_GAUGES)


# -- a real engine ------------------------------------------------------------------


def test_counts_from_a_migration_reach_their_metrics() -> None:
    m = switch(remote("192.0.2.10"), remote("2001:db8:100::10"))
    eng = Engine(m)
    collector = EngineCollector(eng)
    rarp = rarp_request_frame(VM_MAC)
    eng.on_frame(rarp, PORT, None, now=0.0)  # a round: one ARP, one NS
    eng.on_frame(rarp, BR, None, now=0.0)  # the bridge's copy
    eng.on_frame(rarp, PORT, None, now=1.0)  # hold-down
    eng.on_frame(rarp_request_frame(OTHER_MAC), PORT, None, now=1.0)
    eng.on_frame(b"\x00" * 10, PORT, None, now=1.0)
    # EVPN withdraws the IPv4 entry; the kernel then learns the VM's answer.
    ev = gone(remote("192.0.2.10"))
    m.apply(ev, 0.05)
    eng.on_netlink(ev, 0.05)
    ok = new(local("192.0.2.10"))
    m.apply(ok, 0.06)
    eng.on_netlink(ok, 0.06)
    collector.drain()
    got = scrape(collector)
    p = PREFIX
    expected = {
        f"{p}captured_frames_total": 5,
        f'{p}announcements_total{{trigger="rarp"}}': 3,
        f'{p}announcements_total{{trigger="fdb-move"}}': 0,
        f'{p}announcements_ignored_total{{reason="bridge-copy"}}': 1,
        f'{p}announcements_dropped_total{{reason="duplicate"}}': 1,
        f'{p}announcements_dropped_total{{reason="unknown-mac"}}': 1,
        f'{p}frames_dropped_total{{reason="malformed"}}': 1,
        f'{p}rounds_total{{trigger="rarp"}}': 1,
        f'{p}probes_total{{family="ipv4"}}': 2,  # the first, and again after the withdrawal
        f'{p}probes_total{{family="ipv6"}}': 1,
        f"{p}remote_deleted_total": 1,
        f"{p}resolves_total": 1,
        f'{p}confirmations_total{{family="ipv4"}}': 1,
        f'{p}confirmations_total{{family="ipv6"}}': 0,
        f"{p}rounds_active": 1,  # the IPv6 address still waits for its withdrawal
        f"{p}mirror_links": 10,
        f"{p}mirror_neighbors": 2,
        f"{p}mirror_macs": 1,
        f"{p}confirmation_seconds_count": 1,
        f'{p}confirmation_seconds_bucket{{le="0.04"}}': 0,
        f'{p}confirmation_seconds_bucket{{le="0.06"}}': 1,  # le: 0.06 s is in 0.06's bucket
        f'{p}confirmation_seconds_bucket{{le="+Inf"}}': 1,
    }
    assert {k: got[k] for k in expected} == expected
    assert got[f"{p}confirmation_seconds_sum"] == pytest.approx(0.06)
    # Each mapped key's series carries exactly the engine's count.
    for key, value in eng.stats.items():
        if STATS[key] is not None:
            assert got[series(key)] == value, key
    # Every announcement is dropped or starts a round.
    heard = sum(v for k, v in got.items() if k.startswith(f"{p}announcements_total"))
    dropped = sum(v for k, v in got.items() if k.startswith(f"{p}announcements_dropped_total"))
    rounds = sum(v for k, v in got.items() if k.startswith(f"{p}rounds_total"))
    assert heard == dropped + rounds


def test_a_key_the_table_does_not_know_is_exported_not_lost() -> None:
    eng = Engine(switch())
    eng.stats["brand-new.thing"] += 7
    got = scrape(EngineCollector(eng))
    assert got[f'{PREFIX}unmapped_stats_total{{key="brand-new.thing"}}'] == 7


def test_histogram_is_cumulative_and_drain_empties_the_engine_buffer() -> None:
    eng = Engine(switch())
    collector = EngineCollector(eng)
    eng.confirm_times.extend([0.005, 0.01, 0.061, 0.5, 45.0])
    collector.drain()
    assert not eng.confirm_times
    eng.confirm_times.append(0.07)
    collector.drain()
    collector.drain()  # nothing new: nothing counted twice
    got = scrape(collector)
    b = f"{PREFIX}confirmation_seconds_bucket"
    assert got[f'{b}{{le="0.01"}}'] == 2  # 0.005, and 0.01 itself (le)
    assert got[f'{b}{{le="0.06"}}'] == 2
    assert got[f'{b}{{le="0.08"}}'] == 4
    assert got[f'{b}{{le="30.0"}}'] == 5
    assert got[f'{b}{{le="+Inf"}}'] == 6 == got[f"{PREFIX}confirmation_seconds_count"]
    assert got[f"{PREFIX}confirmation_seconds_sum"] == pytest.approx(45.646)


def test_confirm_times_is_bounded_when_nobody_drains_it() -> None:
    eng = Engine(switch())
    assert eng.confirm_times.maxlen is not None
    eng.confirm_times.extend(float(i) for i in range(eng.confirm_times.maxlen + 100))
    assert len(eng.confirm_times) == eng.confirm_times.maxlen


# -- reading from another thread ------------------------------------------------------


def test_counter_copy_takes_the_c_fast_path() -> None:
    """collect() relies on dict(counter) copying without running Python code:
    CPython's dict_merge does so for a dict subclass that keeps dict's own
    __iter__ and keys(). If Engine.stats ever becomes a class overriding
    them, the copy becomes interruptible and this must be revisited."""
    stats = Engine(switch()).stats
    assert type(stats) is Counter
    assert Counter.__iter__ is dict.__iter__
    assert Counter.keys is dict.keys


def test_scrapes_while_the_main_thread_counts_never_fail() -> None:
    """The server thread collects while the main thread adds counters and
    tombstones; a Python-level iteration over those dicts would raise
    'dictionary changed size during iteration' here within a few attempts."""
    m = switch()
    eng = Engine(m)
    collector = EngineCollector(eng)
    stop = threading.Event()

    def main_thread_work() -> None:
        i = 0
        while not stop.is_set():
            # New keys keep appearing (the engine's do so at first use).
            eng.stats[f"dropped.x{i}"] += 1
            eng.stats.pop(f"dropped.x{i - 200}", None)
            # A neighbor appears and is deleted: a tombstone under a new MAC.
            ip = ip_address(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
            n = Neighbor(AF_INET, BR, ip, i.to_bytes(6, "big"), NUD_REACHABLE)
            m.apply(new(n), float(i))
            m.apply(gone(n), float(i))
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over as often as possible
    writer = threading.Thread(target=main_thread_work)
    writer.start()
    try:
        deadline = time.monotonic() + 0.5
        scrapes = 0
        while time.monotonic() < deadline:
            list(collector.collect())
            scrapes += 1
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(old)
    assert scrapes > 10
    assert scrape(collector)[f"{PREFIX}mirror_tombstones"] == m.counts()["remembered"] > 0


def test_metrics_off_by_default_and_server_not_imported_for_the_flag(tmp_path: Path) -> None:
    assert Settings().metrics is None
    flags = config.from_flags(build_parser().parse_args(["--metrics", "[::1]:9464"]))
    assert flags == {"metrics": ("::1", 9464)}
    # In the file: the same text, and "" is off.
    path = tmp_path / "config.toml"
    path.write_text('metrics = "127.0.0.1:9464"\n')
    assert config.load(str(path), {})[0].metrics == ("127.0.0.1", 9464)
    path.write_text('metrics = ""\n')
    assert config.load(str(path), {})[0].metrics is None
    path.write_text('metrics = "::1:9464"\n')
    with pytest.raises(errors.ConfigError, match=r"metrics: write an IPv6 address in brackets"):
        config.load(str(path), {})
    # The CLI (and its --metrics parser) loads neither the server nor
    # prometheus_client: a daemon without --metrics does not pay for them.
    probe = (
        "import sys, rarp_replay.cli.rarp_reply; "
        "print(sorted(m for m in ('prometheus_client', 'wsgiref.simple_server', "
        "'rarp_replay.metrics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
