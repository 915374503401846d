#!/usr/bin/env python3
"""Neighbor-table dump: our struct codec vs pyroute2 vs `ip -j neigh show`.

Run as root. Builds a fresh network namespace with a bridge holding N permanent IPv4
neighbors (installed with `ip -batch`), then times, median of --runs, a full dump of
the IPv4 neighbor table decoded into Python objects:

* rarp-replay: RtnlSocket.dump(RTM_GETNEIGH, AF_INET) -> Neighbor records
* pyroute2:    IPRoute().get_neighbours(family=AF_INET) -> pyroute2 message objects
* ip -j:       `ip -n NS -j neigh show` in a subprocess + json.loads -> dicts

and, as a second column, the same followed by indexing the result in a dict (what a
mirror does with it).

The namespace is always deleted at the end. Permanent entries are exempt from the
neighbor garbage collector (gc_thresh1..3 only bound the others), so N can be large;
the kernel's neighbor table is shared by all namespaces, but deleting the namespace
deletes its bridge and with it every entry.

    sudo .venv/bin/python -m benchmarks.netlink_dump --entries 100000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from rarp_replay.netlink.codec import RTM_GETNEIGH
from rarp_replay.netlink.records import AF_INET, Neighbor
from rarp_replay.netlink.socket import RtnlSocket
from tests.support.netlab import entered


def ip(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def neighbor_batch(count: int) -> str:
    lines = []
    base = int(IPv4Address("10.0.0.1"))
    for i in range(count):
        mac = f"52:54:{i >> 24 & 0xFF:02x}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
        lines.append(f"neigh add {IPv4Address(base + i)} lladdr {mac} dev br0 nud permanent\n")
    return "".join(lines)


Method = tuple[Callable[[], list[Any]], Callable[[list[Any]], dict[Any, Any]]]


def time_runs(name: str, method: Method, runs: int, expect: int) -> tuple[list[float], list[float]]:
    """Per run: seconds to dump+decode, and seconds for dump+decode+index."""
    fetch, index = method
    decode_times, total_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        entries = fetch()
        decoded = time.perf_counter()
        table = index(entries)
        done = time.perf_counter()
        if len(table) < expect:
            raise RuntimeError(f"{name}: {len(table)} entries, expected at least {expect}")
        decode_times.append(decoded - start)
        total_times.append(done - start)
        del entries, table
    return decode_times, total_times


def span(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({min(times):.2f}-{max(times):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-pyroute2", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    n = args.entries
    ns = f"rrbench{os.getpid()}"
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "add", "br0", "type", "bridge")
        ip("-n", ns, "link", "set", "br0", "up")
        start = time.perf_counter()
        ip("-n", ns, "-batch", "-", stdin=neighbor_batch(args.entries))
        print(f"installed {args.entries} neighbors in {time.perf_counter() - start:.2f}s")

        with entered(ns):
            ours_sock = RtnlSocket()

        def ours_fetch() -> list[Any]:
            return [event.record for event in ours_sock.dump(RTM_GETNEIGH, AF_INET)]

        def ours_index(records: list[Neighbor]) -> dict[Any, Any]:
            return {(n.index, n.address): n for n in records}

        def ip_fetch() -> list[Any]:
            entries: list[Any] = json.loads(ip("-n", ns, "-j", "neigh", "show"))
            return entries

        def ip_index(entries: list[dict[str, str]]) -> dict[Any, Any]:
            return {(e["dev"], e["dst"]): e for e in entries}

        results = [("rarp-replay codec", time_runs("ours", (ours_fetch, ours_index), args.runs, n))]
        ours_sock.close()

        if not args.skip_pyroute2:
            from pyroute2 import IPRoute  # noqa: PLC0415 (benchmark-only dependency)

            with entered(ns):
                ipr = IPRoute()

            def pyroute2_fetch() -> list[Any]:
                return list(ipr.get_neighbours(family=AF_INET))

            def pyroute2_index(msgs: list[Any]) -> dict[Any, Any]:
                return {(m["ifindex"], m.get_attr("NDA_DST")): m for m in msgs}

            try:
                method = (pyroute2_fetch, pyroute2_index)
                results.append(
                    ("pyroute2 get_neighbours", time_runs("pyroute2", method, args.runs, n))
                )
            finally:
                ipr.close()

        results.append(("ip -j neigh show", time_runs("ip -j", (ip_fetch, ip_index), args.runs, n)))

        print(f"\nIPv4 neighbor table, {n} entries, median (min-max) of {args.runs} runs, seconds")
        print(f"{'method':<25}{'dump+decode':>22}{'dump+decode+index':>24}")
        for name, (decode_times, total_times) in results:
            print(f"{name:<25}{span(decode_times):>22}{span(total_times):>24}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
