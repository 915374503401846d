"""`rarp-reply`: the daemon's command line (also `python -m rarp_replay`)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__, logs
from ..daemon import Daemon, DaemonConfig
from ..engine import Config
from ..errors import CapabilityError, NetlinkError, RarpReplayError

PROG = "rarp-reply"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _rate(text: str) -> tuple[float, float]:
    """RATE[/BURST]: tokens per second, and how many may be spent at once."""
    rate_s, _, burst_s = text.partition("/")
    try:
        rate = float(rate_s)
        burst = float(burst_s) if burst_s else rate
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST], got {text!r}") from None
    if rate <= 0 or burst < 1:
        raise argparse.ArgumentTypeError(f"rate must be > 0 and burst >= 1: {text!r}")
    return rate, burst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Hear hypervisor RARP announcements on local ports and probe the VM's "
        "addresses (ARP, IPv6 NS) so this switch relearns them and EVPN re-advertises "
        "the MAC/IP routes. Serves every interface, including ones created later.",
    )
    p.add_argument(
        "--holddown",
        type=_positive,
        default=Config.holddown,
        metavar="SECONDS",
        help="one probe round per (MAC, L2 domain) within this window (default %(default)s)",
    )
    p.add_argument(
        "--give-up",
        type=_positive,
        default=Config.give_up,
        metavar="SECONDS",
        help="follow each address this long for the kernel to learn it locally "
        "(default %(default)s)",
    )
    p.add_argument(
        "--remember",
        type=_positive,
        default=300.0,
        metavar="SECONDS",
        help="remember deleted neighbor bindings this long (default %(default)s)",
    )
    p.add_argument(
        "--no-relearn",
        action="store_true",
        help="only probe; do not ask the kernel to resolve addresses whose "
        "EVPN remote entry was withdrawn",
    )
    p.add_argument(
        "--no-takeover",
        action="store_true",
        help="never replace EVPN's remote entry when the VM answers (no make-before-break); "
        "wait for the old leaf's withdrawal instead",
    )
    p.add_argument(
        "--no-fdb-trigger",
        action="store_true",
        help="react to RARPs only, not to the bridge learning a MAC that moved to a local port",
    )
    p.add_argument(
        "--fabric-port",
        action="append",
        default=[],
        metavar="IFNAME",
        help="treat this port as a fabric uplink (never triggers); VXLAN and "
        "other tunnel devices always are",
    )
    d = Config()
    p.add_argument(
        "--port-rate",
        type=_rate,
        default=(d.port_rate, d.port_burst),
        metavar="RATE[/BURST]",
        help="announcements handled per second per ingress port "
        f"(default {d.port_rate:g}/{d.port_burst:g})",
    )
    p.add_argument(
        "--global-rate",
        type=_rate,
        default=(d.global_rate, d.global_burst),
        metavar="RATE[/BURST]",
        help=f"announcements handled per second in all (default {d.global_rate:g}/"
        f"{d.global_burst:g})",
    )
    p.add_argument(
        "--probe-rate",
        type=_rate,
        default=(d.probe_rate, d.probe_burst),
        metavar="RATE[/BURST]",
        help=f"probes sent per second in all (default {d.probe_rate:g}/{d.probe_burst:g})",
    )

    # -- --netlink-rcvbuf: one self-contained block (an operator knob; tests use it to
    # force a netlink overrun) ------------------------------------------------------------
    def byte_size(text: str) -> int:
        """BYTES, or with a binary suffix: 256K, 32M, 1G."""
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
        number, scale = text, 1
        if text[-1:].lower() in units:
            number, scale = text[:-1], units[text[-1].lower()]
        try:
            value = int(number) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected BYTES (e.g. 33554432 or 32M), got {text!r}"
            ) from None
        # The kernel clamps below its minimum (SOCK_MIN_RCVBUF) and doubles what it is
        # given (for skb overhead): outside this range a value is surely a typo.
        if not 4096 <= value <= 1 << 30:
            raise argparse.ArgumentTypeError(f"must be between 4K and 1G: {text!r}")
        return value

    p.add_argument(
        "--netlink-rcvbuf",
        type=byte_size,
        default=DaemonConfig.netlink_rcvbuf,
        metavar="BYTES",
        help="receive buffer of the netlink notification socket (default 32M); when a burst "
        "of neighbor changes overruns it, the daemon re-reads the tables in full",
    )
    # -- end of --netlink-rcvbuf ---------------------------------------------------------
    p.add_argument(
        "--dry-run", action="store_true", help="decide and log, but send nothing and change nothing"
    )
    p.add_argument("--log-level", choices=list(logs.LEVELS), default="info")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logger = logs.setup(args.log_level, args.log_format)
    engine = Config(
        holddown=args.holddown,
        give_up=args.give_up,
        relearn=not args.no_relearn,
        fdb_trigger=not args.no_fdb_trigger,
        takeover=not args.no_takeover,
        port_rate=args.port_rate[0],
        port_burst=args.port_rate[1],
        global_rate=args.global_rate[0],
        global_burst=args.global_rate[1],
        probe_rate=args.probe_rate[0],
        probe_burst=args.probe_rate[1],
        fabric_ports=frozenset(args.fabric_port),
    )
    config = DaemonConfig(
        engine=engine,
        remember=args.remember,
        dry_run=args.dry_run,
        netlink_rcvbuf=args.netlink_rcvbuf,
    )
    daemon = Daemon(config, logger)
    try:
        daemon.open()
        return daemon.run()
    except CapabilityError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (NetlinkError, RarpReplayError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
