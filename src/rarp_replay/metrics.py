"""Prometheus metrics for `rarp-reply` (`--metrics HOST:PORT`; off by default).

The engine and the daemon count everything in `Engine.stats`, a `Counter`
with dotted keys ("probes.ipv4", "dropped.duplicate", ...) named in `counters`. Nothing here runs
in the hot path: a custom collector reads that Counter, the mirror's table
sizes and the open rounds when Prometheus scrapes, and turns each key into a
metric and labels through one explicit table (`STATS`). A key the table does
not know (a counter added later) is exported under
`rarp_replay_unmapped_stats_total{key=...}`, never dropped silently.

The capture's own kernel counters (PACKET_STATISTICS: frames queued and
dropped for lack of buffer space) are read from its sockets at scrape time.

The one thing that is not a counter, the time from a round's start to the
kernel learning the address locally, is collected by the engine in
`Engine.confirm_times`; the daemon's loop calls `MetricsServer.drain()` once
per iteration to move those into a histogram.

The HTTP server runs in a thread of its own (one connection at a time, each
with a timeout: a stalled client cannot stall the daemon, only other scrapes).
It reads what the main thread writes; see `EngineCollector.collect` for why
that is safe without locks.

The daemon imports this module only when the endpoint is on:
prometheus_client and wsgiref take ~100 ms to import (measured), which a
daemon without `--metrics` need not pay. (`--metrics`'s parser is in `listen`.)
"""

from __future__ import annotations

import logging
import os
import platform
import selectors
import socket
import socketserver
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__, counters
from .engine import Engine
from .errors import RarpReplayError
from .listen import format_listen
from .logs import emit

PREFIX = "rarp_replay_"

# Seconds from a round's start (the RARP) to the kernel holding the address
# as a local neighbor. Dense around the EVPN lab's ~60 ms (make-before-break;
# ~160 ms waiting for the old leaf's withdrawal), then coarse up to the
# default give-up time of 30 s; +Inf catches a longer --give-up.
CONFIRM_BUCKETS: tuple[float, ...] = (
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
)


@dataclass(frozen=True)
class CounterSpec:
    help: str
    labels: tuple[str, ...] = ()


# Counter metrics, by name without the prefix and the `_total` suffix (the
# exposition adds it).
COUNTERS: dict[str, CounterSpec] = {
    "captured_frames": CounterSpec(
        "Frames the capture socket delivered: RARPs, and ARP replies / Neighbor "
        "Advertisements while rounds are open (with takeover on)."
    ),
    "frames_dropped": CounterSpec(
        "Captured frames that are not a usable RARP request (or not a parseable reply).",
        ("reason",),
    ),
    "announcements": CounterSpec(
        "Announcements heard on a port this switch serves: RARPs (trigger=rarp) and "
        "MACs the bridge learned on a local port after another port (trigger=fdb-move).",
        ("trigger",),
    ),
    "fdb_moves": CounterSpec(
        "MACs the bridge learned on a port after another one (served or not: those on a "
        'served port are also announcements_total{trigger="fdb-move"}).'
    ),
    "announcements_ignored": CounterSpec(
        "Announcements not for this switch to serve: copies of a frame on upper devices "
        "(bridge, macvlan, VLAN), fabric ports, interfaces without an L3 interface, "
        "ports the include/exclude settings leave out.",
        ("reason",),
    ),
    "announcements_dropped": CounterSpec(
        "Announcements that started no round: hold-down (duplicate), no known address "
        "(unknown-mac), rate limits per port and in all.",
        ("reason",),
    ),
    "rounds": CounterSpec(
        "Probe rounds started (one per migration: MAC and L2 domain).", ("trigger",)
    ),
    "addresses_skipped": CounterSpec(
        "Addresses of an announced MAC not probed (no source address of that family "
        "on the L3 interface).",
        ("reason",),
    ),
    "probes": CounterSpec(
        "ARP requests (ipv4) and Neighbor Solicitations (ipv6) the engine sent out "
        "(failed sends are also in send_errors_total; none go out with --dry-run).",
        ("family",),
    ),
    "probes_dropped": CounterSpec(
        "Probes not sent because of the global probe rate limit (retried later).",
        ("reason",),
    ),
    "answers_ignored": CounterSpec(
        "ARP replies / NAs for an address of an open round that are no proof the VM is "
        "here: seen only on the SVI or bridge, never entering through a local port "
        "(answer-not-local: the bridge's own ARP/ND suppression, or an answer from the "
        "fabric). They start no takeover.",
        ("reason",),
    ),
    "send_errors": CounterSpec("Probes the kernel refused to send."),
    "replies": CounterSpec("ARP replies / NAs for an address of an open round, heard."),
    "takeovers": CounterSpec(
        "EVPN remote entries replaced by a local one after the VM answered (make-before-break)."
    ),
    "takeovers_withheld": CounterSpec(
        "Takeovers held back (takeover-delay) and not done: the old leaf's withdrawal came "
        "first, and the kernel learned the VM as after any withdrawal."
    ),
    "remote_deleted": CounterSpec(
        "EVPN remote entries of an open round deleted (the old leaf's withdrawal)."
    ),
    "resolves": CounterSpec("Requests to the kernel to resolve an address itself (NTF_USE)."),
    "confirmations": CounterSpec(
        "Addresses the kernel learned as local neighbors during a round.", ("family",)
    ),
    "gave_up": CounterSpec("Addresses not confirmed within the give-up time."),
    "cut_short": CounterSpec(
        "Addresses still followed when the daemon stopped (SIGTERM/SIGINT): not gave-up."
    ),
    "netlink_redumps": CounterSpec(
        "Full re-reads of the kernel tables after the kernel dropped notifications (ENOBUFS)."
    ),
    "netlink_errors": CounterSpec("Failed netlink reads and requests."),
    "config_reloads": CounterSpec("Configuration reloads applied (SIGHUP)."),
    "config_reload_errors": CounterSpec(
        "Configuration reloads refused (the file did not validate; nothing changed)."
    ),
    "unmapped_stats": CounterSpec(
        "Engine counters this version's metric table does not know (by engine key).",
        ("key",),
    ),
}

UNMAPPED = "unmapped_stats"

# Engine.stats keys (see `counters`) exported as a counter without labels.
_PLAIN: dict[str, str] = {
    counters.FRAMES: "captured_frames",
    counters.FDB_MOVES: "fdb_moves",
    counters.SEND_ERRORS: "send_errors",
    counters.REPLIES: "replies",
    counters.TAKEOVERS: "takeovers",
    counters.TAKEOVERS_WITHHELD: "takeovers_withheld",
    counters.REMOTE_DELETED: "remote_deleted",
    counters.RESOLVES: "resolves",
    counters.GAVE_UP: "gave_up",
    counters.CUT_SHORT: "cut_short",
    counters.NETLINK_REDUMPS: "netlink_redumps",
    counters.NETLINK_ERRORS: "netlink_errors",
    counters.RELOADS: "config_reloads",
    counters.RELOAD_ERRORS: "config_reload_errors",
}
# Counters with one label: metric -> {label value: Engine.stats key}.
_LABELLED: dict[str, dict[str, str]] = {
    "frames_dropped": {r: counters.DROPPED[r] for r in counters.FRAME_DROPS},
    "announcements": counters.ANNOUNCED,
    "announcements_ignored": {r: counters.DROPPED[r] for r in counters.IGNORED},
    "announcements_dropped": {r: counters.DROPPED[r] for r in counters.ANNOUNCEMENT_DROPS},
    "rounds": counters.ROUNDS_BY,
    "addresses_skipped": counters.SKIPPED,
    "probes": {f: counters.PROBES[v] for v, f in counters.FAMILIES.items()},
    "probes_dropped": {r: counters.DROPPED[r] for r in counters.PROBE_DROPS},
    "answers_ignored": {r: counters.DROPPED[r] for r in counters.ANSWER_DROPS},
    "confirmations": {f: counters.CONFIRMED_BY[v] for v, f in counters.FAMILIES.items()},
}
# Keys that are the sum of others: exporting them too would double what sum() gives.
# (announcements: announcements.* minus the rate-limit drops.)
_SUMS = (counters.ANNOUNCEMENTS, counters.ROUNDS, counters.CONFIRMED)

# Every key in Engine.stats -> (counter, label values), or None for a sum.
STATS: dict[str, tuple[str, tuple[str, ...]] | None] = {
    **{key: (name, ()) for key, name in _PLAIN.items()},
    **{key: (name, (v,)) for name, keys in _LABELLED.items() for v, key in keys.items()},
    **dict.fromkeys(_SUMS),
}

# The kernel's own counts for the capture sockets (PACKET_STATISTICS: tp_packets,
# tp_drops), summed over the fanout group's members and read at scrape time.
CAPTURE_RECEIVED = "capture_kernel_received"
CAPTURE_DROPS = "capture_kernel_drops"
CAPTURE_COUNTERS: dict[str, str] = {
    CAPTURE_RECEIVED: "Frames the kernel queued for the capture sockets (those that passed "
    "the filter, the dropped ones included).",
    CAPTURE_DROPS: "Frames the kernel dropped because a capture socket's receive buffer was "
    "full (raise capture-rcvbuf if this grows).",
}

# Mirror.counts() keys -> gauge name (without the prefix) and help.
MIRROR_GAUGES: dict[str, tuple[str, str]] = {
    "links": ("mirror_links", "Network interfaces in the mirror of the kernel's tables."),
    "addresses": ("mirror_addresses", "Local IP addresses in the mirror."),
    "neighbors": (
        "mirror_neighbors",
        "IPv4/IPv6 neighbor entries in the mirror, in any state (the kernel's own "
        "multicast entries included).",
    ),
    "fdb": ("mirror_fdb_entries", "Bridge FDB entries (MAC locations) in the mirror."),
    "macs": ("mirror_macs", "MACs bound to at least one IP address (a live entry)."),
    "remembered": (
        "mirror_tombstones",
        "Deleted neighbor bindings still remembered (--remember).",
    ),
}


class ConfirmationHistogram:
    """Bucket counts and sum of confirmation times, written by the main thread only.

    `snapshot` is replaced, never changed in place: assigning one attribute is
    atomic, so a scrape sees the counts and the sum of the same moment.
    """

    def __init__(self, bounds: tuple[float, ...] = CONFIRM_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf only
        self._sum = 0.0
        self.snapshot: tuple[tuple[int, ...], float] = (tuple(self._counts), 0.0)

    def observe(self, values: Iterable[float]) -> None:
        for v in values:
            # Prometheus buckets are "less than or equal": bisect_left puts a
            # value equal to a bound into that bound's bucket.
            self._counts[bisect_left(self.bounds, v)] += 1
            self._sum += v
        self.snapshot = (tuple(self._counts), self._sum)


class EngineCollector(Collector):
    """Reads a live engine (and its mirror) at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.histogram = ConfirmationHistogram()
        # The capture's kernel counters, (received, dropped) since it opened:
        # `CaptureGroup.statistics`, set once the capture is open.
        self.capture_statistics: Callable[[], tuple[int, int]] | None = None

    def drain(self) -> None:
        """Move the engine's new confirmation times into the histogram (main thread)."""
        times = self.engine.confirm_times
        if times:
            self.histogram.observe(times)
            times.clear()

    def collect(self) -> Iterator[Metric]:
        # This runs in the server's thread while the main thread counts.
        # dict(counter) copies in one C call: Counter is a dict subclass that
        # overrides neither __iter__ nor keys(), so dict() takes CPython's
        # fast path (dict_merge walks the entries directly), no bytecode runs
        # in between and the GIL is not handed over. Iterating in Python (a
        # loop or comprehension over stats.items()) can see the dict change
        # size and raise (measured: about half the attempts under a busy
        # writer; tests/unit/test_metrics.py has that writer).
        stats = dict(self.engine.stats)
        counters = {
            name: CounterMetricFamily(PREFIX + name, spec.help, labels=spec.labels)
            for name, spec in COUNTERS.items()
        }
        # Every known series, 0 until counted: rate() and alerts see it from start-up.
        for key, target in STATS.items():
            if target is not None:
                name, labels = target
                counters[name].add_metric(labels, stats.get(key, 0))
        for key, value in sorted(stats.items()):
            if key not in STATS:
                counters[UNMAPPED].add_metric((key,), value)
        yield from counters.values()

        # getsockopt(PACKET_STATISTICS) on each capture socket, here in the server's
        # thread: the kernel resets its counters on every read, so `statistics`
        # accumulates them, and nothing else reads them. No capture yet: nothing seen.
        capture = self.capture_statistics
        received, dropped = capture() if capture is not None else (0, 0)
        for name, value in ((CAPTURE_RECEIVED, received), (CAPTURE_DROPS, dropped)):
            yield CounterMetricFamily(PREFIX + name, CAPTURE_COUNTERS[name], value=value)

        counts = self.engine.mirror.counts()  # thread-safe: see Mirror.counts
        for key, value in counts.items():
            name, doc = MIRROR_GAUGES.get(key, (f"mirror_{_metric_word(key)}", f"Mirror: {key}."))
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        # rounds() is list(dict.values()): one C call, as above.
        yield GaugeMetricFamily(
            PREFIX + "rounds_active",
            "Rounds still following an address (probing, or waiting for the remote entry's "
            "deletion).",
            value=len(self.engine.rounds()),
        )

        bucket_counts, total = self.histogram.snapshot
        cumulative = list(accumulate(bucket_counts))
        bounds = [*map(floatToGoString, self.histogram.bounds), "+Inf"]
        yield HistogramMetricFamily(
            PREFIX + "confirmation_seconds",
            "Time from a round's start to the kernel learning the address as a local "
            "neighbor (the switch relearned the VM; EVPN advertises it from here).",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=total,
        )
        yield InfoMetricFamily(
            PREFIX + "build",
            "rarp-replay's version, and the Python it runs on.",
            value={"version": __version__, "python": platform.python_version()},
        )


def _metric_word(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


# -- the HTTP server ----------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    # The server serves one connection at a time: a client that connects and
    # says nothing holds it this long at most (the socket timeout), not forever.
    # Below Prometheus' default scrape timeout (10 s), so that one stalled
    # connection delays a scrape without failing it (measured: a scrape queued
    # behind a silent connection completes when its timeout expires).
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the daemon's log is for the network's events."""


class _Server(WSGIServer):
    def __init__(self, family: int, address: tuple[Any, ...], log: logging.Logger) -> None:
        self.address_family = family
        self.log = log
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() looks the host up with socket.getfqdn(): a
        # reverse DNS query that can hang start-up on a switch whose resolver
        # is unreachable. The name is only used for the WSGI environ.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away or timed out; socketserver would print a
        # traceback to stderr, in the middle of the daemon's log.
        emit(self.log, "metrics-client-error", "debug", error=repr(sys.exc_info()[1]))


class MetricsServer:
    """The collector, a private registry and the HTTP server's thread.

    Binds on construction (so a port in use fails before the daemon says it is
    ready); `start()` starts the serving thread, `close()` stops it. Two steps,
    because the daemon drops its capabilities in between: capset(2) changes
    only the calling thread, so the drop refuses to run with a second thread
    alive (capabilities.drop_to), and a thread started before it would keep
    every capability.
    """

    def __init__(self, engine: Engine, address: tuple[str, int], log: logging.Logger) -> None:
        self.log = log
        self.collector = EngineCollector(engine)
        # Private: the default registry would also carry whatever any imported
        # library registers there.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        # process_start_time_seconds, CPU seconds, resident memory, open fds.
        ProcessCollector(registry=self.registry)
        host, port = address
        where = format_listen(address)
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self.server = _Server(family, sockaddr, log)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise RarpReplayError(f"cannot serve metrics on {where}: {why}") from None
        self.server.set_app(self._app(make_wsgi_app(self.registry)))
        # serve_forever() would notice shutdown() only at its next poll, up
        # to 0.5 s later (measured: every stop took ~0.47 s longer); a pipe
        # wakes the thread at once.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)
        self.where = where

    def start(self, capture_statistics: Callable[[], tuple[int, int]] | None = None) -> None:
        """Serve from now on; `capture_statistics` (the capture's kernel counters) is
        read by scrapes only, so that this thread alone resets the kernel's counts."""
        self.collector.capture_statistics = capture_statistics
        self._thread.start()
        emit(self.log, "metrics-listening", "info", address=self.where)

    def _app(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        log = self.log

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            try:
                return inner(environ, start_response)
            except Exception as exc:
                # One log line, not wsgiref's traceback on stderr; and a 500.
                emit(log, "metrics-error", "error", error=repr(exc))
                start_response(
                    "500 Internal Server Error",
                    [("Content-Type", "text/plain; charset=utf-8")],
                    sys.exc_info(),
                )
                return [b"metrics collection failed; see the daemon's log\n"]

        return app

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.server.socket, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if self._wake_r in ready:
                    return
                # A connection is waiting: accept and serve it (one at a time).
                self.server.handle_request()

    def drain(self) -> None:
        self.collector.drain()

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        # A scrape in progress finishes first; a stalled client would hold the
        # thread up to _Handler.timeout: do not wait that long to exit (the
        # thread is a daemon thread, and only reads).
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=1.0)
        self.server.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)
