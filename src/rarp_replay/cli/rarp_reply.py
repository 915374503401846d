"""`rarp-reply`: the daemon's command line (also `python -m rarp_replay`).

Settings come from built-in defaults, then a TOML file (`--config PATH`, or
/etc/rarp-replay/config.toml when present), then flags; see `config.py` for
the table of settings. SIGHUP re-reads the file (the flags still win).
"""

from __future__ import annotations

import argparse
import socket
import sys

from .. import __version__, config, logs, netns
from ..config import Settings
from ..daemon import Daemon
from ..errors import (
    CapabilityError,
    ConfigError,
    NetlinkError,
    NetnsNotFoundError,
    RarpReplayError,
)
from ._parser import OneLineErrors

PROG = "rarp-reply"

# Exit codes: 0 stopped by SIGTERM/SIGINT (or --check-config passed),
# 1 a runtime failure (privileges, sockets, netlink, another daemon in the
# namespace; with --check-config: a namespace or metrics address the host does
# not have),
# 2 bad flags or config, 6 the network namespace to serve does not exist. 6 is
# LSB's "program is not configured" (systemd shows it as status=6/NOTCONFIGURED):
# restarting cannot make a namespace appear, so the units list 2 and 6 in
# RestartPreventExitStatus= instead of restart-looping every RestartSec= until
# the start limit.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_NETNS = 6


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog=PROG,
        description="Hear hypervisor RARP announcements on local ports and probe the VM's "
        "addresses (ARP, IPv6 NS) so this switch relearns them and EVPN re-advertises "
        "the MAC/IP routes. Serves every interface, including ones created later.",
        epilog="Every setting is also a key of the TOML file: the flag's name without "
        "the leading dashes ('--give-up 10' is 'give-up = 10', '--no-takeover' is "
        "'takeover = false', '--fabric-port' is 'fabric-ports = [...]'). Flags win over "
        "the file; SIGHUP re-reads it.",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML configuration file (default: {config.DEFAULT_PATH}, if it exists)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the file and flags, print the effective configuration as TOML, exit",
    )
    config.add_arguments(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def check_host(settings: Settings) -> None:
    """What --check-config can check beyond the file: that the namespace exists and
    the metrics address is one of this host's (in that namespace). Raises
    RarpReplayError with the message the daemon's start would give.

    The metrics check binds port 0 of the address, not its port: a daemon already
    running (`ExecReload=` runs --check-config next to it) holds that port.
    """
    if settings.netns is not None:
        try:
            netns.enter(settings.netns)
        except CapabilityError:
            # Not allowed to enter it (not root): it exists, which is what can be
            # checked; the address is then not checked in the right namespace.
            return
    if settings.metrics is not None:
        host, _ = settings.metrics
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, 0))
            except OSError as exc:
                raise RarpReplayError(
                    f"cannot serve metrics on {host}: {exc.strerror or exc}"
                    " (not an address of this host or namespace)"
                ) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = config.from_flags(args)

    def reload() -> Settings:
        # Re-read the same file; the command line's flags still win over it.
        return config.load(args.config, flags)[0]

    try:
        settings, source = config.load(args.config, flags)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        try:
            check_host(settings)
        except RarpReplayError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        sys.stdout.write(config.render(settings, source))
        return 0
    logger = logs.setup(settings.log_level, settings.log_format)
    daemon = Daemon(settings, logger, reload=reload)
    try:
        daemon.open()
        return daemon.run()
    except NetnsNotFoundError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_NO_NETNS
    except (CapabilityError, NetlinkError, RarpReplayError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
