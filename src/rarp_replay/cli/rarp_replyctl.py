"""`rarp-replyctl`: ask the running `rarp-reply` what it is doing (read-only).

    rarp-replyctl status                 version, uptime, settings, counters, drops
    rarp-replyctl rounds                 the rounds in flight
    rarp-replyctl show 52:54:00:12:34:56 what the daemon holds for a MAC (or an IP)
    rarp-replyctl --json status          the same as one JSON document

It talks to the daemon's control socket (see `controlsock.socket_path`): the
daemon of this network namespace by default, `--netns NAME` for the one
serving that namespace, `--socket PATH` for any. Exit codes: 0 answered,
1 no daemon answers (or it refused the request), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__, control, controlsock
from ..errors import RarpReplayError
from ._parser import OneLineErrors

PROG = "rarp-replyctl"
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog=PROG,
        description="Ask the running rarp-reply daemon what it is doing. Read-only: "
        "nothing here makes the daemon send a frame or change a table.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--socket", metavar="PATH", help="the daemon's control socket (its control-socket setting)"
    )
    where.add_argument(
        "--netns",
        metavar="NAME|PATH",
        help="the daemon serving this network namespace (as given to rarp-reply --netns)",
    )
    p.add_argument("--json", action="store_true", help="print the answer as one JSON document")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="version, uptime, namespace, settings, counters, drops")
    sub.add_parser("rounds", help="the probe rounds in flight")
    show = sub.add_parser("show", help="what the daemon holds for a MAC or an IP address")
    show.add_argument("subject", metavar="MAC|IP")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    line = args.command
    if args.command == "show":
        try:
            control.parse_subject(args.subject)
        except control.RequestError as exc:
            parser.error(str(exc))
        line = f"show {args.subject}"
    try:
        path = args.socket or controlsock.socket_path(args.netns)
    except RarpReplayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        doc = controlsock.request(path, line, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "timed out"
        print(f"{PROG}: error: no rarp-reply answers on {path}: {why}", file=sys.stderr)
        return EXIT_FAILURE
    if "error" in doc:
        print(f"{PROG}: error: the daemon refused the request: {doc['error']}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(control.render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
