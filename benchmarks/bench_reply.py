#!/usr/bin/env python3
"""Benchmark `rarp-reply` as a whole process, in network namespaces built for the run.

    sudo .venv/bin/python -m benchmarks.bench_reply                 # full run, ~5 min
    sudo .venv/bin/python -m benchmarks.bench_reply --smoke         # a few seconds
    sudo .venv/bin/python -m benchmarks.bench_reply --doc           # also rewrite the docs

Topology (both namespaces are made here, named rrt<run-id>b-*, removed at exit):

    host(eth0) ==veth== (swp1) sw:br100  SVI 198.18.0.1/15, 2001:db8:b0::1/64

N neighbor entries `198.18.x.y lladdr 02:b1:.. nud noarp extern_learn` (one MAC each,
as EVPN installs remote entries) sit on the SVI. The host sends RARPs from one packet
socket and watches eth0 with another, which timestamps (SO_TIMESTAMPNS) both the
outgoing RARP (PACKET_OUTGOING) and the incoming probe: the reaction latency is the
difference of two kernel timestamps taken at the same place, so the benchmark process's
own scheduling does not enter it.

Phases: for each N, start-up (launch -> `ready`, RSS), paced reaction latency, and the
same paced samples against the floor (`echo_responder.py`, a minimal responder) right
after, with the ratio daemon/floor of the medians; at the largest N, bursts of distinct
RARPs and a netlink churn. docs/benchmarks.md
describes the method in full; `report.py` renders a result file into it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import ipaddress
import json
import math
import os
import platform
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rarp_replay
from benchmarks import report
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.macaddr import format_mac
from rarp_replay.packetsock import attach_filter
from tests.support import netlab
from tests.support.netlab import mac_of

ROOT = Path(__file__).resolve().parent.parent

# --- addressing -----------------------------------------------------------------------------
# 198.18.0.0/15 is the benchmarking range (RFC 2544) and 2001:db8::/32 the documentation
# prefix: nothing here could ever be mistaken for a real destination, and it all stays
# inside the two namespaces anyway.
SVI = "br100"
SVI_MAC = bytes.fromhex("02b000000001")
SVI_V4 = "198.18.0.1/15"
SVI_V6 = "2001:db8:b0::1/64"
BASE_V4 = int(ipaddress.IPv4Address("198.18.0.2"))
MAX_N = int(ipaddress.IPv4Address("198.19.255.254")) - BASE_V4 + 1  # 131,069 hosts
# Churn entries are IPv6: 100,000 IPv4 base entries leave too few addresses in the /15
# for another 100,000. A neighbor notification takes the same path for both families.
DOOMED_V6 = int(ipaddress.IPv6Address("2001:db8:b0::1:0:0"))  # deleted by the churn
ADDED_V6 = int(ipaddress.IPv6Address("2001:db8:b0::2:0:0"))  # added by the churn
BURIED_V6 = int(ipaddress.IPv6Address("2001:db8:b0::3:0:0"))  # deleted to make tombstones
MARKER_V6 = int(ipaddress.IPv6Address("2001:db8:b0::4:0:0"))  # "the daemon has caught up"
KIND_BASE, KIND_DOOMED, KIND_ADDED, KIND_BURIED, KIND_MARKER = 0xB1, 0xD1, 0xC1, 0xE1, 0xE2

STATES = {
    # EVPN's remote entries (zebra): the daemon probes and then follows the round for
    # --give-up seconds, waiting for the entry's withdrawal.
    "remote": "nud noarp extern_learn",
    # An administrative entry: probe once, the round closes at once.
    "permanent": "nud permanent",
}

# --- packet constants (include/uapi/linux/if_ether.h, if_packet.h, socket.h) ---------------
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135


def base_ip(i: int) -> str:
    return str(ipaddress.IPv4Address(BASE_V4 + i))


# --- the host side: a sender and a timestamping tap -----------------------------------------


def _tap_program() -> list[tuple[int, int, int, int]]:
    """cBPF: keep RARP, ARP and IPv6 frames only, 128 bytes of each (headers suffice)."""
    ldh_abs, jeq_k, ret_k = 0x28, 0x15, 0x06
    return [
        (ldh_abs, 0, 0, 12),  # A = EtherType
        (jeq_k, 3, 0, ETH_P_RARP),  # -> accept
        (jeq_k, 2, 0, ETH_P_ARP),  # -> accept
        (jeq_k, 1, 0, ETH_P_IPV6),  # -> accept
        (ret_k, 0, 0, 0),  # drop
        (ret_k, 0, 0, 128),  # accept
    ]


class Tap:
    """Kernel-timestamped view of eth0 in the host namespace: RARPs out, probes in.

    `rarps[mac]` / `probes[mac]` hold the kernel time (CLOCK_REALTIME, seconds) of the
    first RARP for `mac` that left, and of the first probe (a unicast ARP request or
    Neighbor Solicitation from the SVI's MAC) addressed to `mac` that arrived.
    """

    def __init__(self, host: netlab.Netns, ifname: str, rcvbuf: int) -> None:
        sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        # Protocol 0 until bind(): nothing is queued before the filter is in place.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        attach_filter(sock, _tap_program())
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        self.sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self.rarps: dict[bytes, float] = {}
        self.probes: dict[bytes, float] = {}
        self.rarp_frames = 0
        self.probe_frames = 0
        self.last_rarp = math.nan
        self.drops = 0

    def clear(self) -> None:
        self.rarps.clear()
        self.probes.clear()
        self.rarp_frames = self.probe_frames = 0
        self.last_rarp = math.nan

    def pump(self, timeout: float) -> int:
        """Read every queued frame, waiting up to `timeout` seconds for the first one."""
        if not self._poll.poll(max(0.0, timeout) * 1000):
            return 0
        n = 0
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(128, 64)
            except BlockingIOError:
                return n
            n += 1
            stamp = math.nan
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec = int.from_bytes(payload[0:8], "little")
                    nsec = int.from_bytes(payload[8:16], "little")
                    stamp = sec + nsec * 1e-9
            self._classify(data, addr[2] == PACKET_OUTGOING, stamp)

    def _classify(self, data: bytes, outgoing: bool, stamp: float) -> None:
        ethertype = int.from_bytes(data[12:14], "big")
        if outgoing:
            if ethertype == ETH_P_RARP and len(data) >= 38:
                self.rarp_frames += 1
                self.rarps.setdefault(data[32:38], stamp)  # target hardware address
                self.last_rarp = stamp
            return
        if data[6:12] != SVI_MAC:
            return
        if ethertype == ETH_P_ARP:
            probe = data[20:22] == b"\x00\x01"  # an ARP request
        elif ethertype == ETH_P_IPV6 and len(data) > 54:
            probe = data[20] == IPPROTO_ICMPV6 and data[54] == ND_NEIGHBOR_SOLICIT
        else:
            probe = False
        if probe:
            self.probe_frames += 1
            self.probes.setdefault(data[0:6], stamp)

    def kernel_drops(self) -> int:
        """Frames the tap's buffer could not hold (PACKET_STATISTICS resets on read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        self.drops += int.from_bytes(raw[4:8], "little")
        return self.drops

    def close(self) -> None:
        self.sock.close()


class Sender:
    """Sends prebuilt frames out of eth0 from the host namespace."""

    def __init__(self, host: netlab.Netns, ifname: str) -> None:
        # Protocol 0: this socket is on no receive list; the tap sees its frames as
        # PACKET_OUTGOING (a packet socket never gets its own transmissions back).
        self.sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((ifname, 0))
        self.retries = 0

    def send(self, frame: bytes) -> None:
        while True:
            try:
                self.sock.send(frame)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                # The device queue is full: a short pause, then the same frame again.
                self.retries += 1
                time.sleep(0.0001)

    def close(self) -> None:
        self.sock.close()


# --- the daemon -----------------------------------------------------------------------------


class Daemon:
    """`python -m rarp_replay --log-format json` in the switch namespace, log to a file.

    The log goes to a file, not a pipe, so a burst of log lines never blocks the daemon
    on a reader that is busy elsewhere.
    """

    def __init__(
        self,
        ns: netlab.Netns,
        args: Sequence[str],
        log_path: Path,
        profile: Path | None,
        gc_trace: bool = False,
    ) -> None:
        self.gc_trace = gc_trace
        cmd = [sys.executable]
        if profile is not None:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        if gc_trace:
            cmd += [str(ROOT / "benchmarks" / "gc_trace.py")]
        else:
            cmd += ["-m", "rarp_replay"]
        cmd += ["--log-format", "json", *args]
        self.log_path = log_path
        self._out = log_path.open("wb")
        self._in = log_path.open("rb")
        self._partial = b""
        self.events: list[dict[str, Any]] = []
        self.launched = time.monotonic()
        # `ip netns exec` execs the command in place: proc.pid is the daemon's pid.
        self.proc = ns.popen(*cmd, stdout=subprocess.DEVNULL, stderr=self._out)
        self.ready_event: dict[str, Any] = {}
        self.launch_to_ready_ms = math.nan

    def poll_log(self) -> None:
        chunk = self._in.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def of(self, event: str) -> list[dict[str, Any]]:
        self.poll_log()
        return [e for e in self.events if e.get("event") == event]

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.poll_log()
            for e in self.events:
                if e.get("event") == "ready":
                    # Seen within the 1 ms polling interval of its write.
                    self.launch_to_ready_ms = (time.monotonic() - self.launched) * 1000
                    self.ready_event = e
                    return e
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no 'ready' within {timeout}s: {self.tail()}")
            time.sleep(0.001)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) in KiB, from /proc/PID/status."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/PID/stat fields 14 and 15)."""
        return sum(self.cpu_times())

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU time so far (/proc/PID/stat fields 14 and 15)."""
        text = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        tck = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tck, int(fields[12]) / tck

    def netlink_queue(self) -> tuple[int, int]:
        """(bytes queued, drops) on the daemon's subscribed rtnetlink socket.

        From /proc/PID/net/netlink (the daemon's namespace), the row whose inode is one
        of the daemon's sockets and that has multicast groups: the notification socket.
        """
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        lines = Path(f"/proc/{self.proc.pid}/net/netlink").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            # sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
            if f[1] == "0" and int(f[3], 16) and f[9] in inodes:
                return int(f[4]), int(f[8])
        return 0, 0

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait, and return the `stopped` line (the engine's counters)."""
        self.proc.terminate()
        rc = self.proc.wait(timeout=30)
        self._out.close()
        stopped = self.of("stopped")
        self._in.close()
        if rc != 0:
            raise RuntimeError(f"daemon exit code {rc}: {self.tail()}")
        return stopped[-1] if stopped else {}


# --- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits) if values else math.nan,
        "mean": round(sum(values) / len(values), digits) if values else math.nan,
    }


def median(values: Iterable[float]) -> float:
    v = sorted(values)
    return percentile(v, 50)


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Options:
    sizes: list[int]
    samples: int
    warmup: int
    starts: int
    bursts: list[int]
    churn: int
    verify: int
    echo: bool
    tombstones: int
    gc_trace: bool
    state: str
    gap_ms: float
    timeout: float
    seed: int
    profile: Path | None
    keep_logs: Path | None
    smoke: bool


@dataclass
class Bench:
    opts: Options
    lab: netlab.Lab
    sw: netlab.Netns
    host: netlab.Netns
    tap: Tap
    tx: Sender
    logdir: Path
    rng: random.Random
    installed: int = 0  # base entries on the SVI
    daemons: int = 0

    # -- helpers ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def batch(self, lines: list[str]) -> float:
        """Apply `ip -batch` lines in the switch namespace; returns the seconds it took."""
        with tempfile.NamedTemporaryFile("w", dir=self.logdir, suffix=".batch") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            started = time.monotonic()
            self.sw.ip("-batch", f.name)
            return time.monotonic() - started

    def grow_table(self, n: int) -> dict[str, Any]:
        nud = STATES[self.opts.state]
        lines = [
            f"neigh replace {base_ip(i)} lladdr {format_mac(mac_of(KIND_BASE, i))} dev {SVI} {nud}"
            for i in range(self.installed, n)
        ]
        seconds = self.batch(lines) if lines else 0.0
        self.installed = n
        return {"added": len(lines), "install_s": round(seconds, 3), **kernel_tables()}

    def start(self, phase: str, *args: str) -> Daemon:
        self.daemons += 1
        name = f"{self.daemons:02d}-{phase}"
        prof = self.opts.profile / f"{name}.prof" if self.opts.profile else None
        d = Daemon(self.sw, args, self.logdir / f"{name}.log", prof, self.opts.gc_trace)
        d.wait_ready(timeout=120)
        return d

    def send_rarp(self, mac: bytes) -> None:
        self.tx.send(rarp_request_frame(mac))

    def drain(self, quiet: float = 0.05) -> None:
        """Read and forget whatever is still queued on the tap."""
        while self.tap.pump(quiet):
            pass
        self.tap.clear()

    # -- phase: start-up -----------------------------------------------------------------

    def startups(self, n: int, extra: Sequence[str]) -> tuple[list[dict[str, Any]], Daemon]:
        """Start the daemon `starts` times at this N; the last one is left running."""
        runs: list[dict[str, Any]] = []
        for k in range(self.opts.starts):
            d = self.start(f"n{n}-start{k}", *extra)
            st = d.status()
            ready = d.ready_event
            runs.append(
                {
                    "launch_to_ready_ms": round(d.launch_to_ready_ms, 1),
                    "load_ms": ready.get("load_ms"),
                    "rss_kb": st.get("VmRSS"),
                    "hwm_kb": st.get("VmHWM"),
                    "mirror_neighbors": ready.get("neighbors"),
                }
            )
            if k < self.opts.starts - 1:
                d.stop()
            else:
                return runs, d
        raise AssertionError("starts must be >= 1")

    # -- phase: reaction latency -----------------------------------------------------------

    def latency(self, n: int, samples: int) -> dict[str, Any]:
        """Paced samples: one RARP, wait for its probe, a pause; MACs from the N entries."""
        o = self.opts
        need = samples + o.warmup
        if n >= need:
            picks = self.rng.sample(range(n), need)
        else:
            # A table of n entries has only n distinct MACs: cycle through them (the
            # daemon runs with --holddown 0, so a repeated MAC starts a new round too).
            base = self.rng.sample(range(n), n)
            picks = [base[i % n] for i in range(need)]
        self.drain()
        lat_us: list[float] = []
        warm_us: list[float] = []
        lost: list[str] = []
        for j, i in enumerate(picks):
            mac = mac_of(KIND_BASE, i)
            self.tap.clear()
            self.send_rarp(mac)
            deadline = time.monotonic() + o.timeout
            while mac not in self.tap.probes and time.monotonic() < deadline:
                self.tap.pump(deadline - time.monotonic())
            if mac in self.tap.probes and mac in self.tap.rarps:
                us = (self.tap.probes[mac] - self.tap.rarps[mac]) * 1e6
                (warm_us if j < o.warmup else lat_us).append(round(us, 1))
            elif j >= o.warmup:
                lost.append(format_mac(mac))
            # Pace: a random gap (gap..2*gap) so samples neither queue behind each other
            # nor lock into phase with the daemon's 1 s housekeeping tick.
            time.sleep(self.rng.uniform(o.gap_ms, 2 * o.gap_ms) / 1000)
        return {
            "samples": len(lat_us),
            "requested": samples,
            "lost": lost,
            "distinct_macs": len(set(picks[o.warmup :])),
            "us": summary(lat_us),
            "warmup_us": warm_us,
            "values_us": lat_us,
        }

    # -- phase: the floor ---------------------------------------------------------------------

    def echo_baseline(self, n: int) -> dict[str, Any]:
        """The same paced samples against echo_responder.py instead of the daemon."""
        proc = self.sw.popen(
            sys.executable,
            str(ROOT / "benchmarks" / "echo_responder.py"),
            "swp1",
            SVI,
            format_mac(SVI_MAC),
            SVI_V4.split("/", maxsplit=1)[0],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("echo_responder did not start")
        try:
            return self.latency(n, self.opts.samples)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    # -- phase: bursts ------------------------------------------------------------------------

    def burst(self, r: int) -> dict[str, Any]:
        if r > self.installed:
            # More RARPs than entries (a small --sizes): add entries so that every RARP
            # of the burst is for a distinct known MAC.
            self.grow_table(r)
        n = self.installed
        picks = self.rng.sample(range(n), r)
        macs = [mac_of(KIND_BASE, i) for i in picks]
        frames = [rarp_request_frame(m) for m in macs]
        d = self.start(f"burst{r}")
        self.drain()
        user0, sys0 = d.cpu_times()
        t0 = time.monotonic()
        for f in frames:
            self.tx.send(f)
        send_s = time.monotonic() - t0
        # Wait until every MAC was probed, or nothing new arrived for 2 s.
        deadline = time.monotonic() + self.opts.timeout + r / 500
        last_progress = time.monotonic()
        seen = 0
        while len(self.tap.probes) < len(macs) and time.monotonic() < deadline:
            self.tap.pump(0.1)
            if len(self.tap.probes) > seen:
                seen, last_progress = len(self.tap.probes), time.monotonic()
            elif time.monotonic() - last_progress > 2.0:
                break
        self.tap.pump(0.2)  # late duplicates would show here
        wanted = set(macs)
        probed = wanted & self.tap.probes.keys()
        rarps_seen = wanted & self.tap.rarps.keys()
        first_rarp = min(self.tap.rarps[m] for m in rarps_seen) if rarps_seen else math.nan
        last_probe = max(self.tap.probes[m] for m in probed) if probed else math.nan
        per_mac_ms = [
            (self.tap.probes[m] - self.tap.rarps[m]) * 1000 for m in probed if m in rarps_seen
        ]
        user1, sys1 = d.cpu_times()
        st = d.status()
        gcs = gc_summary(d)
        stats = d.stop()
        return {
            "n": n,
            "r": len(macs),
            "gc2": gcs,
            "sent": len(frames),
            "send_ms": round(send_s * 1000, 1),
            "rarps_on_tap": len(rarps_seen),
            "tap_drops": self.tap.kernel_drops(),
            "probed": len(probed),
            "all_probed": len(probed) == len(macs),
            "probe_frames": self.tap.probe_frames,
            "first_rarp_to_last_probe_ms": round((last_probe - first_rarp) * 1000, 1),
            "per_mac_ms": summary(per_mac_ms, 2),
            # When each probe arrived, from the first RARP: the shape of the backlog.
            "probe_times_ms": sorted(
                round((self.tap.probes[m] - first_rarp) * 1000, 2) for m in probed
            ),
            "daemon_cpu_s": round(user1 - user0 + sys1 - sys0, 3),
            "daemon_cpu_user_s": round(user1 - user0, 3),
            "daemon_cpu_sys_s": round(sys1 - sys0, 3),
            "rss_kb": st.get("VmRSS"),
            "daemon_stats": _stats(stats),
        }

    # -- phase: netlink churn -----------------------------------------------------------------

    def churn(self, n: int) -> dict[str, Any]:
        o = self.opts
        pairs = o.churn // 2
        nud = STATES["remote"]
        doomed = [mac_of(KIND_DOOMED, i) for i in range(pairs)]
        added = [mac_of(KIND_ADDED, i) for i in range(pairs)]

        def v6(base: int, i: int) -> str:
            return str(ipaddress.IPv6Address(base + i))

        # The entries the churn deletes exist before the daemon starts (from its dump).
        self.batch(
            [
                f"neigh replace {v6(DOOMED_V6, i)} lladdr {format_mac(doomed[i])} dev {SVI} {nud}"
                for i in range(pairs)
            ]
        )
        # --remember 0: a deleted binding is forgotten at once, so a RARP for it must
        # find nothing ("unknown-mac"), which makes a lost deletion visible.
        d = self.start("churn", "--remember", "0")
        before = d.ready_event.get("neighbors")
        rss_ready = d.status().get("VmRSS")
        # One delete and one add per pair, interleaved; the last line adds added[-1].
        lines: list[str] = []
        for i in range(pairs):
            lines.append(f"neigh del {v6(DOOMED_V6, i)} dev {SVI}")
            lines.append(
                f"neigh replace {v6(ADDED_V6, i)} lladdr {format_mac(added[i])} dev {SVI} {nud}"
            )
        self.drain()
        cpu0 = d.cpu_seconds()
        t_start = time.time()
        batch_s = self.batch(lines)
        t_end = time.time()
        queued_at_end = d.netlink_queue()[0]
        # Caught up: poll with a RARP for the last-added MAC every 2 ms until it is probed.
        # Meanwhile watch the daemon's notification queue: while bytes are queued there,
        # the mirror is certainly not current yet (a lower bound for the catch-up).
        last = added[-1]
        sent: list[float] = []  # kernel times the polls left
        queue_busy_until = t_end
        deadline = time.monotonic() + 60
        while last not in self.tap.probes and time.monotonic() < deadline:
            if d.netlink_queue()[0]:
                queue_busy_until = time.time()
            self.send_rarp(last)
            until = time.monotonic() + 0.002
            # The RARP's own outgoing copy is queued at once: keep reading until the
            # period is over or the probe came, so polls stay 2 ms apart.
            while last not in self.tap.probes and time.monotonic() < until:
                self.tap.pump(until - time.monotonic())
            if last in self.tap.rarps:
                sent.append(self.tap.rarps.pop(last))
        caught = self.tap.probes.get(last, math.nan)
        cpu = d.cpu_seconds() - cpu0
        rss = d.status()
        nl_drops = d.netlink_queue()[1]
        # Correctness on samples whose final state is known.
        k = o.verify
        sample_added = self.rng.sample(range(pairs), min(k, pairs))
        sample_doomed = self.rng.sample(range(pairs), min(k, pairs))
        sample_base = self.rng.sample(range(n), min(k, n))
        check = (
            [("added", added[i]) for i in sample_added]
            + [("deleted", doomed[i]) for i in sample_doomed]
            + [("untouched", mac_of(KIND_BASE, i)) for i in sample_base]
        )
        self.rng.shuffle(check)
        self.drain()
        for start in range(0, len(check), 100):
            chunk = check[start : start + 100]
            for _kind, mac in chunk:
                self.send_rarp(mac)
            expect = {m for kind, m in chunk if kind != "deleted"}
            until = time.monotonic() + 5
            while not expect <= self.tap.probes.keys() and time.monotonic() < until:
                self.tap.pump(0.05)
        self.tap.pump(1.0)  # a probe for a deleted MAC would arrive well within this
        probed = self.tap.probes.keys()
        by_kind: dict[str, dict[str, int]] = {}
        for kind, mac in check:
            b = by_kind.setdefault(kind, {"sent": 0, "probed": 0})
            b["sent"] += 1
            b["probed"] += mac in probed
        overruns = len(d.of("netlink-overrun"))
        gcs = gc_summary(d)
        stats = d.stop()
        # The daemon's log rate-limits its unknown-mac lines, so its counters tell how
        # the RARPs were judged. The polls for the last MAC were answered in order:
        # the first `misses` found it unknown, one started a round, the rest were
        # duplicates (hold-down). Every other unknown-mac verdict is a deleted MAC's.
        unknown_total = stats.get("dropped_unknown-mac", 0)
        misses = max(0, len(sent) - 1 - stats.get("dropped_duplicate", 0))
        by_kind.setdefault("deleted", {"sent": 0, "probed": 0})["unknown"] = unknown_total - misses
        # The mirror became current after the last missed poll left the host, and
        # before the probe arrived.
        after_miss = sent[misses - 1] if 0 < misses <= len(sent) else t_end
        # The kernel's own view, to confirm the final state the checks assume.
        dump = self.sw.ip("neigh", "show", "dev", SVI).stdout.splitlines()
        kernel = {
            "ipv4": sum(1 for x in dump if x.startswith("198.1")),
            "added_v6": sum(1 for x in dump if x.startswith("2001:db8:b0::2:")),
            "deleted_v6": sum(1 for x in dump if x.startswith("2001:db8:b0::1:")),
        }
        lost = by_kind.get("added", {}).get("sent", 0) - by_kind.get("added", {}).get("probed", 0)
        lost += by_kind.get("deleted", {}).get("probed", 0)
        lost += by_kind.get("untouched", {}).get("sent", 0) - by_kind.get("untouched", {}).get(
            "probed", 0
        )
        return {
            "n": n,
            "events": 2 * pairs,
            "mirror_neighbors_before": before,
            "batch_s": round(batch_s, 3),
            "events_per_s": round(2 * pairs / batch_s) if batch_s else None,
            "catch_up_after_batch_ms": round((caught - t_end) * 1000, 1),
            # The mirror was current somewhere between the last unanswered RARP and the
            # answered one: the bounds of the catch-up moment.
            "caught_up_between_ms": [
                round(max(0.0, after_miss - t_end, queue_busy_until - t_end) * 1000, 1),
                round((caught - t_end) * 1000, 1),
            ],
            "netlink_queued_at_end_bytes": queued_at_end,
            "netlink_queue_busy_after_ms": round((queue_busy_until - t_end) * 1000, 1),
            "netlink_socket_drops": nl_drops,
            "catch_up_from_start_ms": round((caught - t_start) * 1000, 1),
            "polls": len(sent),
            "polls_unknown": misses,
            "daemon_cpu_s": round(cpu, 3),
            "rss_ready_kb": rss_ready,
            "rss_kb": rss.get("VmRSS"),
            "netlink_overruns": overruns,
            "gc2": gcs,
            "check": by_kind,
            "lost_updates": lost,
            "kernel_after": kernel,
            "daemon_stats": _stats(stats),
        }

    # -- phase: latency next to many tombstones ---------------------------------------------

    def tombstones(self, n: int, k: int) -> dict[str, Any]:
        """Reaction latency after `k` bindings were deleted, with the default --remember.

        Each deletion leaves a tombstone for --remember (300) seconds; the daemon's
        housekeeping walks all of them. The latency is measured on the N base entries
        while those tombstones are remembered.
        """
        nud = STATES["remote"]

        def v6(base: int, i: int) -> str:
            return str(ipaddress.IPv6Address(base + i))

        self.batch(
            [
                f"neigh replace {v6(BURIED_V6, i)} "
                f"lladdr {format_mac(mac_of(KIND_BURIED, i))} dev {SVI} {nud}"
                for i in range(k)
            ]
        )
        d = self.start("tombstones")
        marker = mac_of(KIND_MARKER, 0)
        lines = [f"neigh del {v6(BURIED_V6, i)} dev {SVI}" for i in range(k)]
        # A new entry after the deletions: once it is probed, the deletions were applied.
        lines.append(
            f"neigh replace {v6(MARKER_V6, 0)} lladdr {format_mac(marker)} dev {SVI} {nud}"
        )
        self.batch(lines)
        self.drain()
        deadline = time.monotonic() + 60
        while marker not in self.tap.probes and time.monotonic() < deadline:
            self.send_rarp(marker)
            until = time.monotonic() + 0.01
            while marker not in self.tap.probes and time.monotonic() < until:
                self.tap.pump(until - time.monotonic())
        if marker not in self.tap.probes:
            raise RuntimeError("the daemon never applied the deletions")
        time.sleep(0.2)
        lat = self.latency(n, min(self.opts.samples, 500))
        st = d.status()
        gcs = gc_summary(d)
        stats = d.stop()
        return {
            "n": n,
            "tombstones": k,
            "gc2": gcs,
            "latency": lat,
            "rss_kb": st.get("VmRSS"),
            "daemon_stats": _stats(stats),
        }

    # -- the whole run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.opts
        out: dict[str, Any] = {
            "sizes": [],
            "echo": None,
            "bursts": [],
            "churn": None,
            "tombstones": None,
        }
        for n in o.sizes:
            table = self.grow_table(n)
            self.say(f"N={n}: table ready ({table}); start-up x{o.starts}")
            runs, d = self.startups(n, ["--holddown", "0"])
            self.say(f"N={n}: {o.samples} latency samples")
            lat = self.latency(n, o.samples)
            gcs = gc_summary(d)
            stats = d.stop()
            floor = None
            if o.echo:
                # The floor at the same N, right after the daemon's samples: the same
                # table in the kernel, as close in time as a shared machine allows.
                self.say(f"N={n}: {o.samples} samples against echo_responder.py (the floor)")
                floor = self.echo_baseline(n)
            entry = {
                "n": n,
                "table": table,
                "startup": {
                    "runs": runs,
                    "launch_to_ready_ms": round(median(r["launch_to_ready_ms"] for r in runs), 1),
                    "load_ms": round(median(r["load_ms"] for r in runs), 1),
                    "rss_kb": round(median(r["rss_kb"] for r in runs)),
                },
                "latency": lat,
                "floor": floor,
                "ratio_p50": _ratio(lat, floor),
                "daemon_stats": _stats(stats),
                "gc2": gcs,
            }
            out["sizes"].append(entry)
            self.say(
                f"N={n}: ready in {entry['startup']['launch_to_ready_ms']} ms, "
                f"RSS {entry['startup']['rss_kb'] / 1024:.1f} MiB, latency us {lat['us']}, "
                f"lost {len(lat['lost'])}"
                + (f"; floor {floor['us']}, p50 ratio {entry['ratio_p50']}x" if floor else "")
            )
        last = out["sizes"][-1] if out["sizes"] else None
        if last is not None and last["floor"] is not None:
            # The floor at the largest N, where earlier result files kept their only one.
            out["echo"] = {"n": last["n"], "latency": last["floor"]}
        for r in o.bursts:
            self.say(f"burst of {r} at N={max(self.installed, r)}")
            b = self.burst(r)
            out["bursts"].append(b)
            self.say(
                f"burst {r}: probed {b['probed']}/{b['r']}, first RARP -> last probe "
                f"{b['first_rarp_to_last_probe_ms']} ms, daemon CPU {b['daemon_cpu_s']} s "
                f"(user {b['daemon_cpu_user_s']}, system {b['daemon_cpu_sys_s']})"
            )
        if o.churn:
            self.say(f"netlink churn of {o.churn} events at N={self.installed}")
            c = self.churn(self.installed)
            out["churn"] = c
            self.say(
                f"churn: batch {c['batch_s']} s, caught up {c['catch_up_after_batch_ms']} ms "
                f"after it, overruns {c['netlink_overruns']}, lost {c['lost_updates']}"
            )
        if o.tombstones:
            self.say(f"latency with {o.tombstones} tombstones (default --remember)")
            t = self.tombstones(self.installed, o.tombstones)
            out["tombstones"] = t
            self.say(f"tombstones: latency us {t['latency']['us']}")
        return out


def _ratio(lat: dict[str, Any], floor: dict[str, Any] | None) -> float | None:
    """Daemon p50 / floor p50 of one N: what the issue's 2.5x target is about."""
    if not floor or not floor["us"]["p50"]:
        return None
    return round(lat["us"]["p50"] / floor["us"]["p50"], 2)


def _stats(stopped: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stopped.items() if k not in ("ts", "level", "event", "signal")}


def gc_summary(d: Daemon) -> dict[str, Any] | None:
    """Full garbage-collector passes the daemon made (with --gc-trace), else None:
    those before `ready` (the load) and those after it (while serving), apart."""
    if not d.gc_trace:
        return None
    d.poll_log()
    before: list[float] = []
    after: list[float] = []
    passes = before
    for e in d.events:
        if e.get("event") == "ready":
            passes = after
        elif e.get("event") == "gc":
            passes.append(e["ms"])
    return {
        "loading": {"count": len(before), "total_ms": round(sum(before), 1)},
        "serving": {
            "count": len(after),
            "max_ms": max(after, default=0.0),
            "total_ms": round(sum(after), 1),
        },
    }


def kernel_tables() -> dict[str, int]:
    """Entries in the kernel's ARP and ND tables: one table each for ALL namespaces."""
    out = {}
    for name, path in (("arp_cache_entries", "arp_cache"), ("ndisc_cache_entries", "ndisc_cache")):
        lines = Path(f"/proc/net/stat/{path}").read_text().splitlines()
        out[name] = int(lines[1].split()[0], 16)
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), *args], check=False, capture_output=True, text=True
        )
        return proc.stdout.strip()

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iproute2": subprocess.run(
            ["ip", "-V"], check=False, capture_output=True, text=True
        ).stdout.strip(),
        "mem_total_kb": int(Path("/proc/meminfo").read_text().split()[1]),
        "package": str(Path(rarp_replay.__file__).parent),
        "commit": git("rev-parse", "--short", "HEAD"),
        # Others edit src/ concurrently: say whether the code measured was committed.
        "src_dirty": bool(git("status", "--porcelain", "--", "src")),
        **activity("start"),
    }


def activity(when: str) -> dict[str, Any]:
    """How busy the machine was: load average, and namespaces that are not this run's
    (other test runs share the 2 cores, and the kernel's neighbor tables)."""
    names = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout.split("\n")
    mine = f"rrt{netlab.RUN_ID}b-"
    return {
        f"loadavg_{when}": Path("/proc/loadavg").read_text().split()[:3],
        f"foreign_netns_{when}": sum(1 for x in names if x.strip() and not x.startswith(mine)),
    }


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met / not met (or not measured at the size it names)."""
    targets: list[dict[str, Any]] = []
    sizes = res["sizes"]
    if sizes:
        p99 = {s["n"]: s["latency"]["us"]["p99"] for s in sizes}
        lost = sum(len(s["latency"]["lost"]) for s in sizes)
        worst = max(p99.values())
        flat = p99[max(p99)] / p99[min(p99)] if p99[min(p99)] else math.nan
        targets.append(
            {
                "target": "reaction p99 < 1 ms at every N (flat in N)",
                "measured": f"worst p99 {worst:.0f} us; p99 at largest/smallest N = {flat:.2f}x"
                + (f"; {lost} samples unanswered" if lost else ""),
                "met": worst < 1000 and lost == 0,
            }
        )
        big = max(sizes, key=lambda s: s["n"])
        at = f"at N={big['n']:,}"
        full = big["n"] >= 100_000
        ready = big["startup"]["launch_to_ready_ms"]
        targets.append(
            {
                "target": "serving within 1 s of start with 100,000 entries",
                "measured": f"launch -> ready {ready:.0f} ms {at}",
                "met": ready < 1000 if full else None,
            }
        )
        rss = big["startup"]["rss_kb"] / 1024
        targets.append(
            {
                "target": "RSS < 90 MB at 100,000 entries",
                "measured": f"{rss * 1.048576:.1f} MB ({rss:.1f} MiB) {at}",
                "met": rss * 1024 * 1024 < 90e6 if full else None,
            }
        )
        ratios = {s["n"]: s.get("ratio_p50") for s in sizes}
        named = [n for n in (1000, 100_000) if n in ratios]
        if any(ratios[n] is not None for n in named):
            targets.append(
                {
                    "target": "reaction p50 <= 2.5x the floor's (same run) at N=1,000 and 100,000",
                    "measured": "; ".join(
                        f"N={n:,}: {ratios[n]}x" for n in named if ratios[n] is not None
                    ),
                    "met": all(ratios[n] is not None and ratios[n] <= 2.5 for n in named)
                    if len(named) == 2
                    else None,
                }
            )
    if res["bursts"]:
        b = max(res["bursts"], key=lambda x: x["r"])
        targets.append(
            {
                "target": "10,000-RARP burst: every MAC probed, last within 1 s",
                "measured": f"{b['probed']:,}/{b['r']:,} probed, last "
                f"{b['first_rarp_to_last_probe_ms']:.0f} ms after the first RARP",
                "met": (b["all_probed"] and b["first_rarp_to_last_probe_ms"] < 1000)
                if b["r"] >= 10_000
                else None,
            }
        )
    c = res.get("churn")
    if c:
        targets.append(
            {
                "target": "mirror catches up with 100,000 netlink events within 2 s, losing none",
                "measured": f"{c['catch_up_after_batch_ms']:.0f} ms after the last event "
                f"({c['catch_up_from_start_ms']:.0f} ms after the first); "
                f"{c['lost_updates']} lost in the sample; {c['netlink_overruns']} overrun(s)",
                "met": (c["catch_up_after_batch_ms"] < 2000 and c["lost_updates"] == 0)
                if c["events"] >= 100_000
                else None,
            }
        )
    return targets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def ints(text: str) -> list[int]:
        return [int(x.replace("_", "")) for x in text.split(",") if x]

    p.add_argument("--sizes", type=ints, default=[1000, 100_000])
    p.add_argument("--samples", type=int, default=1000, help="latency samples per N (>= 200)")
    p.add_argument("--warmup", type=int, default=20, help="unreported samples first, per N")
    p.add_argument("--starts", type=int, default=3, help="daemon starts per N (median)")
    p.add_argument("--bursts", type=ints, default=[1000, 10_000])
    p.add_argument("--churn", type=int, default=100_000, help="netlink events (0: skip)")
    p.add_argument("--verify", type=int, default=1000, help="MACs checked per kind after churn")
    p.add_argument(
        "--no-echo", dest="echo", action="store_false", help="skip the echo_responder floor"
    )
    p.add_argument(
        "--tombstones", type=int, default=50_000, help="deletions before a latency run (0: skip)"
    )
    p.add_argument("--state", choices=sorted(STATES), default="remote")
    p.add_argument("--gap-ms", type=float, default=5.0, help="pause between samples: gap..2*gap")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for one probe")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, help="result file (default benchmarks/results/...json)")
    p.add_argument("--doc", action="store_true", help="rewrite docs/benchmarks.md and the plot")
    p.add_argument(
        "--profile", type=Path, help="run each daemon under cProfile, .prof files here (slower)"
    )
    p.add_argument("--keep-logs", type=Path, help="copy the daemons' JSON logs here")
    p.add_argument(
        "--gc-trace",
        action="store_true",
        help="run the daemons via gc_trace.py: log and count full GC passes",
    )
    p.add_argument("--smoke", action="store_true", help="N=10, 20 samples, burst 50, churn 200")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.samples, args.warmup, args.starts = [10], 20, 2, 1
        args.bursts, args.churn, args.verify, args.gap_ms = [50], 200, 20, 1.0
        args.tombstones = 100
    if not args.sizes or max(args.sizes) > MAX_N or min(args.sizes) < 1:
        p.error(f"sizes must be 1..{MAX_N}")
    if args.samples < 1 or args.starts < 1:
        p.error("--samples and --starts must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not netlab.have_root():
        print("bench_reply: needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    for tool in ("ip",):
        if shutil.which(tool) is None:
            print(f"bench_reply: {tool} not found", file=sys.stderr)
            return 2
    opts = Options(
        sizes=sorted(set(args.sizes)),
        samples=args.samples,
        warmup=args.warmup,
        starts=args.starts,
        bursts=args.bursts,
        churn=args.churn,
        verify=args.verify,
        echo=args.echo,
        tombstones=args.tombstones,
        gc_trace=args.gc_trace,
        state=args.state,
        gap_ms=args.gap_ms,
        timeout=args.timeout,
        seed=args.seed,
        profile=args.profile,
        keep_logs=args.keep_logs,
        smoke=args.smoke,
    )
    if opts.profile:
        opts.profile.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"{'smoke' if args.smoke else 'run'}-{stamp}.json"
    )
    # SIGTERM -> SystemExit, so the finally below removes the namespaces.
    netlab.install_signal_cleanup()
    atexit.register(netlab.close_all_labs)
    started = time.time()
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["bench_reply.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "options": {**vars(args), "sizes": opts.sizes},
    }
    lab = netlab.Lab("b")
    logdir = Path(tempfile.mkdtemp(prefix="bench-reply-"))
    try:
        sw, host = lab.netns("sw"), lab.netns("host")
        lab.veth(host, "eth0", sw, "swp1")
        # The host only sends RARPs and watches; no IPv6 chatter of its own.
        host.sysctl("net.ipv6.conf.eth0.disable_ipv6", 1)
        sw.bridge(SVI, "swp1", mac=format_mac(SVI_MAC))
        sw.ip("addr", "add", SVI_V4, "dev", SVI)
        sw.ip("-6", "addr", "add", SVI_V6, "dev", SVI, "nodad")
        tap = Tap(host, "eth0", rcvbuf=64 << 20)
        tx = Sender(host, "eth0")
        bench = Bench(opts, lab, sw, host, tap, tx, logdir, random.Random(opts.seed))
        try:
            res = bench.run()
        finally:
            tap.close()
            tx.close()
            if opts.keep_logs:
                opts.keep_logs.mkdir(parents=True, exist_ok=True)
                for f in logdir.glob("*.log"):
                    shutil.copy(f, opts.keep_logs / f.name)
    finally:
        lab.close()
        shutil.rmtree(logdir, ignore_errors=True)
    meta["duration_s"] = round(time.time() - started, 1)
    meta["machine"].update(activity("end"))
    meta["namespace_prefix"] = lab.prefix
    result = {"meta": meta, **res}
    result["targets"] = evaluate(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"results: {out}", file=sys.stderr)
    for t in result["targets"]:
        mark = {True: "met", False: "NOT met", None: "n/a (size not run)"}[t["met"]]
        print(f"  {mark:>18}  {t['target']}: {t['measured']}", file=sys.stderr)
    if args.doc:
        report.write_docs(result, ROOT / "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
