#!/usr/bin/env python3
"""Micro-benchmark of the daemon's per-RARP path, in-process and without sockets.

    .venv/bin/python -m benchmarks.bench_engine                # N=100,000, R=10,000, 5 reps
    .venv/bin/python -m benchmarks.bench_engine --profile      # ... plus a cProfile top list
    .venv/bin/python -m benchmarks.bench_engine --n 1000 --r 200 --reps 2   # seconds

What one RARP of a burst costs the daemon, apart from the kernel. The mirror is built the
way `tests/support/topology.py` builds its fixtures (records fed to `Mirror.reset`), in the
shape `bench_reply.py` gives the switch namespace: a bridge `br100` with the port `swp1`,
the SVI addresses 198.18.0.1/15 and 2001:db8:b0::1/64, and N remote entries
`198.18.x.y lladdr 02:b1:<i> nud noarp extern_learn` on the SVI (one MAC each). R RARPs for
R distinct known MACs then go through three paths, each timed over `--reps` repetitions
(a fresh `Engine` each time; the median is reported):

* ``engine``: `Engine.on_frame` for the sighting on `swp1` and for the bridge's copy on
  `br100` (an ETH_P_ALL capture sees the broadcast on both; docs of `domain`).
* ``fdb``: the bridge learning the MAC on `swp1`: its RTM_NEWNEIGH (AF_BRIDGE) message,
  laid out as the kernel writes it (br_fdb.c fdb_fill_info(), captured from kernel 6.x),
  decoded by `netlink.codec`, applied to the mirror and given to `Engine.on_fdb`.
* ``daemon``: all of the above through the daemon's own code: `Daemon._on_capture` (the
  engine, `_do`, `_send`, the log lines) with the capture replaced by a list of prepared
  `Sighting` batches of 256, `Daemon._on_netlink` with the netlink socket replaced by
  prepared datagrams (decoded by the real codec), `tick` and the log flush once per
  iteration, as `Daemon.run` does. The log is JSON at level info, written to a file, as in
  `bench_reply.py`. The sender does not send (`--send` makes it a real `PacketSender` in
  a namespace built for the run, with the bridge and a veth port: needs root).

The figures are µs of wall time per RARP on an otherwise idle core; the whole daemon adds
the kernel's share (recvmmsg, sendto through the bridge, netlink reads), which
`bench_reply.py` measures end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import ipaddress
import json
import os
import pstats
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rarp_replay import logs
from rarp_replay.config import Settings
from rarp_replay.daemon import _GROUPS, Daemon
from rarp_replay.engine import Engine, SendFrame
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.mirror import Mirror
from rarp_replay.netlink.codec import RTM_NEWNEIGH, decode_span, iter_spans
from rarp_replay.netlink.records import (
    AF_BRIDGE,
    AF_INET,
    NTF_EXT_LEARNED,
    NUD_NOARP,
    NUD_REACHABLE,
    RT_SCOPE_LINK,
    Address,
    Change,
    Event,
    Link,
    Neighbor,
)
from rarp_replay.netlink.socket import RtnlSocket
from rarp_replay.packetsock import PacketSender, RarpCapture, Sighting
from tests.support import netlab
from tests.support.netlab import mac_of

LO, BR, PORT = 1, 3, 2  # as in the benchmark namespace: swp1 is created before br100
SVI_MAC = bytes.fromhex("02b000000001")
BASE_V4 = int(ipaddress.IPv4Address("198.18.0.2"))
KIND_BASE = 0xB1
BATCH = 256  # RarpCapture.recv_batch's default
PATHS = "engine,fdb,daemon"


def build_mirror(n: int, br: int = BR, port: int = PORT) -> Mirror:
    links = [
        Link(LO, "lo", flags=0x9),
        Link(br, "br100", flags=1, mac=SVI_MAC, kind="bridge"),
        Link(
            port,
            "swp1",
            flags=1,
            mac=bytes.fromhex("02b0000000f1"),
            kind="veth",
            master=br,
            slave_kind="bridge",
        ),
    ]
    addresses = [
        Address(br, ipaddress.ip_address("198.18.0.1"), 15),
        Address(br, ipaddress.ip_address("2001:db8:b0::1"), 64),
        Address(br, ipaddress.ip_address("fe80::b0:1"), 64, scope=RT_SCOPE_LINK),
    ]
    neighbors = [
        Neighbor(
            AF_INET,
            br,
            ipaddress.IPv4Address(BASE_V4 + i),
            mac_of(KIND_BASE, i),
            NUD_NOARP,
            NTF_EXT_LEARNED,
        )
        for i in range(n)
    ]
    m = Mirror()
    m.reset(
        [Event(Change.NEW, x) for x in links],
        [Event(Change.NEW, x) for x in addresses],
        [Event(Change.NEW, x) for x in neighbors],
        now=0.0,
    )
    return m


# The notification the bridge sends when it learns a MAC on a port (fdb_fill_info():
# ndmsg, NDA_LLADDR, NDA_MASTER, NDA_FLAGS_EXT, NDA_CACHEINFO), one per datagram.
_NLMSGHDR = struct.Struct("=IHHII")
_FDB_BODY = struct.Struct("=BxxxiHBB HH6sxx HHI HHI HH16x")


def fdb_datagram(port: int, master: int, mac: bytes, seq: int) -> bytes:
    body = _FDB_BODY.pack(
        AF_BRIDGE, port, NUD_REACHABLE, 0, 0, 10, 2, mac, 8, 9, master, 8, 15, 0, 20, 3
    )
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWNEIGH, 0, seq, 0) + body


def decode_datagram(data: bytes) -> list[Event]:
    """What `RtnlSocket.recv_events` does with one datagram."""
    out = []
    for mtype, _flags, _seq, start, end in iter_spans(data):
        ev = decode_span(mtype, data, start, end)
        if ev is not None:
            out.append(ev)
    return out


class Clock:
    """Wall time and this thread's CPU time over the timed sections. Other work on a
    shared machine inflates the first; the second is what the code itself used."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        w, c = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.thread_time() - c


Result = tuple[Clock, dict[str, int]]


# --- stand-ins for the daemon's sockets ----------------------------------------------------


class NullSender:
    def __init__(self) -> None:
        self.sent = 0

    def send_on(self, interface: int | str, frame: bytes) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


class CountingSender:
    """A real PacketSender (in the benchmark's namespace) that also counts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0

    def send_on(self, interface: int | str, frame: bytes) -> None:
        self.inner.send_on(interface, frame)
        self.sent += 1

    def close(self) -> None:
        self.inner.close()


class ListCapture:
    def __init__(self) -> None:
        self.batches: list[list[Sighting]] = []

    def recv_batch(self, max_frames: int = BATCH) -> list[Sighting]:
        return self.batches.pop() if self.batches else []

    def close(self) -> None:
        pass


class ListEvents:
    def __init__(self) -> None:
        self.datagrams: list[list[bytes]] = []

    def recv_events(self, max_bytes: int = 4 << 20) -> list[Event]:
        events: list[Event] = []
        for d in self.datagrams.pop() if self.datagrams else []:
            events += decode_datagram(d)
        return events

    def close(self) -> None:
        pass


# --- the three paths ------------------------------------------------------------------------


class Bench:
    def __init__(self, n: int, r: int, br: int = BR, port: int = PORT) -> None:
        self.n, self.r, self.br, self.port = n, r, br, port
        t0 = time.perf_counter()
        gc.disable()
        self.mirror = build_mirror(n, br, port)
        gc.collect()
        gc.freeze()  # as Daemon._load does
        gc.enable()
        self.build_s = time.perf_counter() - t0
        step = max(1, n // r)
        picks = [(i * step) % n for i in range(r)]
        self.macs = [mac_of(KIND_BASE, i) for i in picks]
        self.frames = [rarp_request_frame(m) for m in self.macs]
        self.fdb = [fdb_datagram(port, br, m, k) for k, m in enumerate(self.macs)]

    def fresh(self) -> Engine:
        self.mirror.fdb.clear()  # the FDB path of an earlier repetition learned them all
        return Engine(self.mirror)

    def engine(self) -> Result:
        eng = self.fresh()
        br, port = self.br, self.port
        probes = 0
        clock = Clock()
        with clock.timed():
            for f in self.frames:
                now = time.monotonic()
                for a in eng.on_frame(f, port, None, now):
                    if type(a) is SendFrame:
                        probes += 1
                eng.on_frame(f, br, None, now)
        return clock, {"probes": probes}

    def fdb_path(self) -> Result:
        eng = self.fresh()
        mirror = self.mirror
        acted = 0
        clock = Clock()
        with clock.timed():
            for d in self.fdb:
                for ev in decode_datagram(d):
                    now = time.monotonic()
                    prev = mirror.apply(ev, now)
                    acted += len(eng.on_fdb(ev, prev, now))
        return clock, {"fdb_actions": acted}

    def daemon(self, lab: Lab | None = None) -> Result:
        """The daemon's loop body over the burst; with `lab`, on real sockets."""
        self.fresh()
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            log_path = Path(tmp) / "daemon.log"
            stream = stack.enter_context(log_path.open("w"))
            logger = logs.setup("info", "json", stream=stream)
            d = Daemon(Settings(), logger)
            stack.callback(d.close)
            d.mirror = self.mirror
            d.engine = Engine(self.mirror, d.engine.config, send=d._do_now)
            if lab is None:
                self._prepared(d)
            else:
                lab.open(d)
            sightings = 0
            recv_batch = d.capture.recv_batch

            def counted(max_frames: int = BATCH) -> list[Sighting]:
                nonlocal sightings
                got = recv_batch(max_frames)
                sightings += len(got)
                return got

            d.capture.recv_batch = counted  # type: ignore[method-assign]

            def iteration() -> None:
                # Daemon.run's loop body, minus poll(): frames first, then netlink.
                d._on_capture()
                d._on_netlink()
                d._do(d.engine.tick(time.monotonic()))
                logs.flush()

            logs.batch(True)
            clock = Clock()
            if lab is None:
                with clock.timed():
                    while d.capture.batches:  # type: ignore[attr-defined]
                        iteration()
            else:
                # Chunks of RARPs from the host, then the daemon's work on them: only the
                # latter is timed (the host's sends run the bridge in the sender's context).
                half = BATCH // 2
                for k in range(0, self.r, half):
                    chunk = self.frames[k : k + half]
                    for f in chunk:
                        lab.tx.send(f)
                    want = sightings + 2 * len(chunk)  # the port's sighting and the bridge's
                    deadline = time.perf_counter() + 5.0
                    with clock.timed():
                        while sightings < want and time.perf_counter() < deadline:
                            iteration()
                        iteration()  # the FDB notifications that came last
            logs.batch(False)
            stream.flush()
            lines = log_path.read_text().count("\n")
            sent = d.sender.sent  # type: ignore[attr-defined]
        return clock, {"probes": sent, "sightings": sightings, "log_lines": lines}

    def _prepared(self, d: Daemon) -> None:
        cap, evs = ListCapture(), ListEvents()
        d.capture, d.events = cap, evs  # type: ignore[assignment]
        d.sender = NullSender()  # type: ignore[assignment]
        half = BATCH // 2
        stamp = time.time()
        for k in range(0, self.r, half):
            batch: list[Sighting] = []
            for f in self.frames[k : k + half]:
                batch.append(Sighting(f, self.port, 0, None, None, stamp))
                batch.append(Sighting(f, self.br, 0, None, None, stamp))
            cap.batches.append(batch)
            evs.datagrams.append(self.fdb[k : k + half])
        cap.batches.reverse()
        evs.datagrams.reverse()


class Lab:
    """For --sockets: namespaces built by netlab (named for the run, removed at exit),
    `host(eth0) ==veth== (swp1) sw:br100` as in bench_reply.py, and the daemon's three
    sockets opened inside `sw`, so the daemon path reads real frames and real FDB
    notifications, and sends real probes through the bridge and the veth."""

    def __init__(self, b: Bench) -> None:
        self.lab = netlab.Lab("e")
        try:
            self.sw, self.host = self.lab.netns("sw"), self.lab.netns("host")
            self.lab.veth(self.host, "eth0", self.sw, "swp1")
            self.sw.bridge("br100", "swp1", mac=SVI_MAC.hex(":"))
            self.sw.ip("addr", "add", "198.18.0.1/15", "dev", "br100")
            found = (self.sw.ifindex("br100"), self.sw.ifindex("swp1"))
            if found != (b.br, b.port):
                raise RuntimeError(f"namespace ifindexes {found} differ from the mirror's")
            self.tx = self.host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.tx.bind(("eth0", 0))
        except BaseException:
            self.lab.close()
            raise

    def open(self, d: Daemon) -> None:
        # Forget what the bridge learned in an earlier repetition (and the
        # notifications about it): every RARP is a new MAC on swp1 again.
        self.sw.ip("link", "set", "swp1", "type", "bridge_slave", "fdb_flush")
        with netlab.entered(self.sw.name):
            d.events = RtnlSocket(groups=_GROUPS, rcvbuf=d.config.netlink_rcvbuf)
            d.capture = RarpCapture(capture_filter(answers=True), rcvbuf=d.config.capture_rcvbuf)
            d.sender = CountingSender(PacketSender())  # type: ignore[assignment]

    def close(self) -> None:
        self.tx.close()
        self.lab.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="neighbor entries in the mirror")
    p.add_argument("--r", type=int, default=10_000, help="RARPs (distinct known MACs)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per path (median)")
    p.add_argument("--paths", default="engine,fdb,daemon", help="comma-separated: " + PATHS)
    p.add_argument("--profile", action="store_true", help="cProfile one daemon-path run")
    p.add_argument("--top", type=int, default=30, help="lines of the profile")
    p.add_argument(
        "--sockets",
        action="store_true",
        help="also run the daemon path on real sockets in namespaces (root)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    o = p.parse_args()
    if o.r > o.n or o.r < 1:
        p.error("--r must be between 1 and --n")
    paths = [x for x in o.paths.split(",") if x]
    if bad := set(paths) - set(PATHS.split(",")):
        p.error(f"unknown path(s): {', '.join(sorted(bad))}")
    if o.sockets:
        if os.geteuid() != 0:
            print("bench_engine.py: --sockets needs root (network namespaces)", file=sys.stderr)
            return 1
        paths.append("sockets")

    b = Bench(o.n, o.r)
    print(f"mirror of N={o.n:,} built in {b.build_s:.2f} s; R={o.r:,} RARPs, {o.reps} reps")
    result: dict[str, Any] = {"n": o.n, "r": o.r, "reps": o.reps, "paths": {}}
    with contextlib.ExitStack() as stack:
        lab: Lab | None = None
        if o.sockets:
            netlab.install_signal_cleanup()
            lab = Lab(b)
            stack.callback(lab.close)
        runners: dict[str, Callable[[], Result]] = {
            "engine": b.engine,
            "fdb": b.fdb_path,
            "daemon": b.daemon,
            "sockets": lambda: b.daemon(lab),
        }
        for name in paths:
            walls, cpus, info = [], [], {}
            for _ in range(o.reps):
                clock, info = runners[name]()
                walls.append(clock.wall / o.r * 1e6)
                cpus.append(clock.cpu / o.r * 1e6)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            result["paths"][name] = {
                "wall_us_per_rarp": round(wall, 2),
                "cpu_us_per_rarp": round(cpu, 2),
                "wall_runs": [round(x, 2) for x in walls],
                "cpu_runs": [round(x, 2) for x in cpus],
                **info,
            }
            runs = ", ".join(f"{x:.1f}" for x in cpus)
            extra = ", ".join(f"{k} {v:,}" for k, v in info.items())
            print(
                f"{name:>7}: {cpu:6.1f} µs CPU/RARP, {wall:6.1f} µs wall (medians; CPU runs "
                f"{runs}; {extra})"
            )
        if o.profile:
            prof = cProfile.Profile()
            prof.enable()
            runners["sockets" if o.sockets else "daemon"]()
            prof.disable()
            for order in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats(order).print_stats(o.top)
                print(out.getvalue())
    if o.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
