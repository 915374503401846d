"""rarp-req: send RARP announcements exactly as hypervisors do, for testing.

    rarp-req -mac 44:38:39:22:01:23 -intf eth0          # the original Go tool's spelling
    rarp-req --mac 52:54:00:12:34:56 -i eth0 --pattern qemu
    rarp-req --mac 52:54:00:00:00:01,52:54:00:00:00:02 -i eth0 --vlan 100 --count 3

Each round sends one frame per MAC, back to back (a host evacuation announces
many VMs at once); rounds follow an absolute schedule against time.monotonic(),
so sleeping late once does not shift later rounds.

Errors are one line on stderr: exit 2 for usage errors, 1 for runtime errors.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn, TextIO

from .. import __version__
from ..errors import AddressError, CapabilityError, FrameError, InterfaceError, RarpReplayError
from ..frames.arp import ArpOp, ArpPacket, rarp_request_frame
from ..frames.ethernet import EthernetFrame
from ..macaddr import format_mac, parse_unicast_mac
from ..packetsock import PacketSender, interface_index, interface_is_up

PROG = "rarp-req"
EXIT_RUNTIME = 1
EXIT_USAGE = 2

# QEMU's announce-self defaults (qapi/net.json AnnounceParameters; net/announce.c):
# initial 50 ms, max 550 ms, 5 rounds, step 100 ms. After round r (0-based) the
# timer waits min(initial + r * step, max): gaps 50, 150, 250, 350 ms.
QEMU_INITIAL_MS = 50
QEMU_MAX_MS = 550
QEMU_ROUNDS = 5
QEMU_STEP_MS = 100

CAPABILITY_HINT = "run as root or grant it: setcap cap_net_raw+ep"


class UsageError(Exception):
    """Bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of usage + error: the contract of every rarp-req failure.
        raise UsageError(message)


def qemu_offsets(rounds: int = QEMU_ROUNDS) -> list[float]:
    """Send times in seconds from the first frame, for QEMU's announce timer."""
    offsets, at = [], 0
    for r in range(rounds):
        offsets.append(at / 1000)
        at += min(QEMU_INITIAL_MS + r * QEMU_STEP_MS, QEMU_MAX_MS)
    return offsets


def even_offsets(count: int, interval: float) -> list[float]:
    return [k * interval for k in range(count)]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Send RARP announcements (EtherType 0x8035, op 3) as hypervisors do "
        "after a live migration.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--mac",
        "-mac",
        action="append",
        dest="macs",
        metavar="MAC",
        help="MAC to announce; repeat or comma-separate for several (one frame each per round)",
    )
    parser.add_argument(
        "--interface", "-intf", "-i", dest="interface", metavar="IFNAME", help="send on IFNAME"
    )
    parser.add_argument(
        "--count",
        "-count",
        type=int,
        metavar="N",
        help="rounds to send (default 1; with --pattern qemu, 5)",
    )
    parser.add_argument(
        "--interval",
        "-interval",
        type=float,
        metavar="SECONDS",
        help="time between rounds (default 1.0; not with --pattern)",
    )
    parser.add_argument(
        "--pattern",
        choices=["qemu"],
        help="QEMU announce timing: rounds at +0, 50, 200, 450, 800 ms (gaps grow by 100 ms, "
        "capped at 550 ms with more --count)",
    )
    parser.add_argument("--vlan", "-vlan", type=int, metavar="ID", help="802.1Q tag, 1..4094")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each frame (hex and decoded) with its planned time; send nothing",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _parse_macs(values: list[str] | None) -> list[bytes]:
    if not values:
        raise UsageError("at least one --mac is required")
    macs: list[bytes] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise UsageError(f"empty MAC address in {value!r}")
            try:
                macs.append(parse_unicast_mac(item))
            except AddressError as exc:
                raise UsageError(str(exc)) from exc
    return macs


def _schedule(args: argparse.Namespace) -> list[float]:
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.pattern == "qemu":
        if args.interval is not None:
            raise UsageError("--interval cannot be combined with --pattern")
        return qemu_offsets(QEMU_ROUNDS if args.count is None else args.count)
    interval = 1.0 if args.interval is None else args.interval
    if not math.isfinite(interval) or interval < 0:
        raise UsageError(f"--interval must be a non-negative number of seconds, got {interval}")
    return even_offsets(1 if args.count is None else args.count, interval)


def _describe(frame: bytes) -> str:
    """Decode our own frame with the codec (a round trip check visible to the user)."""
    eth = EthernetFrame.parse(frame)
    arp = ArpPacket.parse(eth.payload)
    try:
        op = ArpOp(arp.op).name
    except ValueError:
        op = str(arp.op)
    vlan = "none" if eth.vid is None else str(eth.vid)
    return (
        f"dst={format_mac(eth.dst)} src={format_mac(eth.src)} vlan={vlan} "
        f"type={eth.ethertype:#06x} op={arp.op}({op}) "
        f"sha={format_mac(arp.sha)} spa={arp.sender_ip} tha={format_mac(arp.tha)} "
        f"tpa={arp.target_ip}"
    )


def _emit(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()  # one line per frame as it goes, even into a pipe


def _sleep_until(target: float) -> None:
    while True:
        left = target - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    macs = _parse_macs(args.macs)
    offsets = _schedule(args)
    vlan: int | None = args.vlan
    if vlan is not None and not 1 <= vlan <= 4094:
        raise UsageError(f"--vlan must be 1..4094, got {vlan}")
    ifname: str | None = args.interface
    if ifname is None and not args.dry_run:
        raise UsageError("--interface (-intf, -i) is required")
    frames = [(mac, rarp_request_frame(mac, vlan)) for mac in macs]
    vlan_text = "none" if vlan is None else str(vlan)
    out = sys.stdout

    if args.dry_run:
        # No sockets, no privileges: a preview of the plan. A named interface must
        # exist (an ioctl on the name, no privilege needed): a preview for a typo
        # that exits 0 would hide it until the real run.
        if ifname is not None:
            interface_index(ifname)
        for offset in offsets:
            for mac, frame in frames:
                _emit(
                    out,
                    f"+{offset * 1000:.1f}ms intf={ifname or '-'} mac={format_mac(mac)} "
                    f"vlan={vlan_text} len={len(frame)} hex={frame.hex()} {_describe(frame)}",
                )
        return 0

    assert ifname is not None
    interface_index(ifname)  # "no such interface" before anything else
    if not interface_is_up(ifname):
        raise InterfaceError(f"interface {ifname} is down", ifname)
    try:
        sender = PacketSender(ifname)
    except OSError as exc:
        raise RarpReplayError(f"cannot open a packet socket on {ifname}: {exc.strerror}") from exc
    with sender:
        start = time.monotonic()
        for offset in offsets:
            _sleep_until(start + offset)
            for mac, frame in frames:
                try:
                    sender.send(frame)
                except OSError as exc:
                    raise RarpReplayError(f"sending on {ifname} failed: {exc.strerror}") from exc
                if not args.quiet:
                    sent_ms = (time.monotonic() - start) * 1000
                    _emit(
                        out,
                        f"+{sent_ms:.1f}ms intf={ifname} mac={format_mac(mac)} vlan={vlan_text}",
                    )
    return 0


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except CapabilityError as exc:
        _fail(f"missing capability {exc.capability} to open a packet socket ({CAPABILITY_HINT})")
        return EXIT_RUNTIME
    except (InterfaceError, FrameError, RarpReplayError) as exc:
        _fail(str(exc))
        return EXIT_RUNTIME
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): stop quietly, and point stdout at
        # /dev/null so the interpreter's final flush does not print a second complaint.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME
    except OSError as exc:
        _fail(exc.strerror or str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
