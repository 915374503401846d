"""Keep the man pages in man/ current with the code: their title lines and OPTIONS.

rarp-reply(8)'s options come from the settings table, `rarp_replay.config.Settings`
(flag, metavar, help, default, file key, whether a reload applies it), plus the
command line's own flags (--config, --check-config...) from its argparse parser;
rarp-req(8)'s options come from its parser. Each page is hand-written around one
region this script owns, between two comment lines:

    .\\" BEGIN GENERATED OPTIONS (scripts/gen_man.py)
    .\\" END GENERATED OPTIONS

and its `.TH` line carries the package version. rarp-replyctl(8) gets only the
`.TH` line.

    python scripts/gen_man.py          # rewrite the pages
    python scripts/gen_man.py --check  # exit 1 naming each stale page

The output is committed rather than made at package build time: the sdist, the
wheel and the .deb then ship plain files, and building them needs neither this
script nor the package importable. tests/unit/test_packaging.py runs the check,
so a setting added or changed without regenerating fails the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from rarp_replay import __version__, config
from rarp_replay.cli import rarp_reply, rarp_req

MAN_DIR = Path(__file__).resolve().parents[1] / "man"
BEGIN = '.\\" BEGIN GENERATED OPTIONS (scripts/gen_man.py)'
END = '.\\" END GENERATED OPTIONS'
_TH = re.compile(r"^\.TH \S+ 8\b.*$", re.MULTILINE)


def roff_text(text: str) -> str:
    """Prose for a text line: backslashes escaped, never read as a request."""
    return "\\&" + text.replace("\\", "\\e")


def roff_word(text: str) -> str:
    """An option name or value: hyphens as \\- (a minus sign, copy-pasteable)."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def _tag(names: Iterable[str], metavar: str | None) -> str:
    arg = f" \\fI{roff_word(metavar)}\\fR" if metavar else ""
    return ", ".join(f"\\fB{roff_word(n)}\\fR{arg}" for n in names)


def _metavar(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def _sentence(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def parser_options(
    parser: argparse.ArgumentParser, keep: Callable[[argparse.Action], bool] = lambda a: True
) -> list[str]:
    """One .TP entry per option of `parser` (those `keep` accepts), in parser order."""
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or not keep(action) or action.help == argparse.SUPPRESS:
            continue
        help_text = (action.help or "").replace("%(prog)s", parser.prog)
        out += [
            ".TP",
            _tag(action.option_strings, _metavar(action)),
            roff_text(_sentence(help_text)),
        ]
    return out


def settings_options() -> list[str]:
    """One .TP entry per setting of the table, with its file key and default."""
    out: list[str] = []
    for f in dataclasses.fields(config.Settings):
        kind: config.Kind = f.metadata["kind"]
        k = config.key(f)
        flag = f.metadata["flag"] or f"--{k}"
        names = [flag, f"--no-{k}"] if kind is config.BOOL else [flag]
        text = _sentence(f.metadata["help"])
        if f.default not in ((), None):
            text += f" Default: {kind.to_toml(f.default).strip(chr(34))}."
        out += [".TP", _tag(names, kind.metavar), roff_text(text)]
        # The file key on a line of its own, in bold: what to search for.
        out.append(f"File key: \\fB{roff_word(k)}\\fR.")
        if f.metadata["restart"]:
            out.append(roff_text("Read at start only: a reload (SIGHUP) does not apply a change."))
    return out


def _rarp_reply_options() -> list[str]:
    settings = {f.name for f in dataclasses.fields(config.Settings)}
    parser = rarp_reply.build_parser()
    return [
        *parser_options(parser, lambda a: a.dest not in settings),
        ".PP",
        roff_text(
            "Settings. Each is also a key of the configuration file (see CONFIGURATION FILE); "
            "a flag wins over the file."
        ),
        *settings_options(),
    ]


def _rarp_req_options() -> list[str]:
    return parser_options(rarp_req.build_parser())


# Page -> the generated OPTIONS region (None: the page has only a generated .TH line).
PAGES: dict[str, Callable[[], list[str]] | None] = {
    "rarp-reply.8": _rarp_reply_options,
    "rarp-req.8": _rarp_req_options,
    "rarp-replyctl.8": None,
}


def render(name: str, current: str) -> str:
    """`current` (the page's text) with its generated parts brought up to date."""
    title = name.removesuffix(".8").upper()
    th = f'.TH {title} 8 "" "rarp-replay {__version__}" "System Administration"'
    text, n = _TH.subn(lambda _m: th, current, count=1)
    if n != 1:
        raise SystemExit(f"{name}: no .TH line")
    make = PAGES[name]
    if make is None:
        return text
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{name}: no {BEGIN!r} ... {END!r} region")
    body = "\n".join([BEGIN, *make(), ""])
    return text[:start] + body + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = p.parse_args(argv)
    stale = []
    for name in PAGES:
        path = MAN_DIR / name
        current = path.read_text()
        wanted = render(name, current)
        if wanted != current:
            stale.append(name)
            if not args.check:
                path.write_text(wanted)
    if args.check and stale:
        print(
            f"stale man pages: {', '.join(stale)}: run python scripts/gen_man.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
