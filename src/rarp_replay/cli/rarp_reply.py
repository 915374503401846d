"""`rarp-reply`: the daemon's command line (also `python -m rarp_replay`).

Settings come from built-in defaults, then a TOML file (`--config PATH`, or
/etc/rarp-replay/config.toml when present), then flags; see `config.py` for
the table of settings. SIGHUP re-reads the file (the flags still win).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__, config, logs
from ..config import Settings
from ..daemon import Daemon
from ..errors import CapabilityError, ConfigError, NetlinkError, RarpReplayError

PROG = "rarp-reply"

# Exit codes: 0 stopped by SIGTERM/SIGINT (or --check-config passed),
# 1 a runtime failure (privileges, sockets, netlink), 2 bad flags or config.
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
        sys.stdout.write(config.render(settings, source))
        return 0
    logger = logs.setup(settings.log_level, settings.log_format)
    daemon = Daemon(settings, logger, reload=reload)
    try:
        daemon.open()
        return daemon.run()
    except (CapabilityError, NetlinkError, RarpReplayError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
