"""The control protocol of `rarp-replyctl`, sans I/O: requests in, documents out.

A client sends one request line (ASCII, at most `MAX_REQUEST` octets with its
newline): `status`, `rounds` or `show MAC|IP`. The daemon answers with one
JSON document and a newline, then closes the connection. Nothing a request
names can make the daemon send a frame or change a table: every handler here
only reads the engine, the mirror and the round history.

`History` is the round history behind `show`: a small recorder fed with the
actions the engine returns (its `Log` events, probes, resolves), so it needs
nothing from the engine beyond what the daemon already carries out. It is
bounded: the last `PER_MAC` rounds of at most `MACS` MACs.

The socket server around this is `controlsock`; the command line is
`cli/rarp_replyctl`. The JSON schema is documented in the README
("rarp-replyctl").
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .counters import EXCLUDED_PORT, RATE_LIMIT_GLOBAL, RATE_LIMIT_PORT
from .domain import GlobSet, Ignored, resolve
from .engine import Engine, Log, Resolve, Round, SendFrame
from .errors import AddressError
from .macaddr import format_mac, parse_mac
from .mirror import Mirror
from .netlink.records import (
    NUD_DELAY,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
    IPAddress,
)

# One request line, newline included: the longest valid one ("show" and an IPv6
# address) is under 60 octets; 1 KiB leaves room and bounds what a client can make
# the daemon buffer.
MAX_REQUEST = 1024
COMMANDS = ("status", "rounds", "show")
# Round history: rounds kept per MAC, and MACs kept (least recently touched go first).
PER_MAC = 4
MACS = 1024
# Probes and resolves noted between two feeds (one engine input's worth, normally).
PENDING_MAX = 4096
# Timeline entries kept per round (a round probes each address at most ~7 times).
TIMELINE_MAX = 64

_NUD_NAMES = (
    (NUD_INCOMPLETE, "incomplete"),
    (NUD_REACHABLE, "reachable"),
    (NUD_STALE, "stale"),
    (NUD_DELAY, "delay"),
    (NUD_PROBE, "probe"),
    (NUD_FAILED, "failed"),
    (NUD_NOARP, "noarp"),
    (NUD_PERMANENT, "permanent"),
)


class RequestError(ValueError):
    """A request that is not one of the commands; the message says what is valid."""


@dataclass(frozen=True)
class Request:
    command: str
    argument: str | None = None


def parse_request(line: bytes) -> Request:
    """One request line (without or with its newline) -> Request. Raises RequestError."""
    if len(line) > MAX_REQUEST:
        raise RequestError(f"request longer than {MAX_REQUEST} octets")
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise RequestError("request is not ASCII") from None
    words = text.split()
    if not words or words[0] not in COMMANDS:
        raise RequestError(f"unknown request {text[:40]!r}: expected status, rounds or show X")
    cmd, args = words[0], words[1:]
    if cmd == "show":
        if len(args) != 1:
            raise RequestError("show takes one argument: a MAC or an IP address")
        parse_subject(args[0])
        return Request(cmd, args[0])
    if args:
        raise RequestError(f"{cmd} takes no argument")
    return Request(cmd)


def parse_subject(text: str) -> bytes | IPAddress:
    """`show`'s argument: a MAC (bytes) or an IP address. Raises RequestError."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return parse_mac(text)
    except (AddressError, ValueError):
        raise RequestError(f"not a MAC or IP address: {text[:40]!r}") from None


def nud_text(state: int) -> str:
    names = [name for bit, name in _NUD_NAMES if state & bit]
    return ",".join(names) or "none"


# -- round history ---------------------------------------------------------------


@dataclass(slots=True)
class RoundRecord:
    """What the log said about one round (or one announcement that started none)."""

    mac: str
    domain: str
    trigger: str
    started: float  # time.monotonic() when it was recorded
    wall: float  # time.time() then
    port: str = ""
    vni: int | None = None  # the announcement's `vni` (a single VXLAN device's VLAN tunnel)
    bindings: list[str] = field(default_factory=list)
    # (ms since the start, event, the Log's fields or the probed address): kept raw,
    # turned into text only when asked (str() of an IPv6 address is ~10 us of Python,
    # the same order as the daemon's whole work for one RARP).
    timeline: list[tuple[float, str, object]] = field(default_factory=list)
    result: str | None = None  # set when the announcement started no round
    probed: list[IPAddress] = field(default_factory=list)  # keys it holds in History
    confirmed: int = 0
    gave_up: int = 0
    ended: bool = False

    def add(self, event: str, at_ms: float, what: object) -> None:
        if len(self.timeline) < TIMELINE_MAX:
            self.timeline.append((at_ms, event, what))

    def events(self) -> list[dict[str, Any]]:
        """The timeline as documents, in time order."""
        out = []
        for at_ms, event, what in sorted(self.timeline, key=lambda e: e[0]):
            doc: dict[str, Any] = {"at_ms": at_ms, "event": event}
            if isinstance(what, Mapping):
                doc.update(
                    (k, v) for k, v in what.items() if k not in ("mac", "domain", "after_ms")
                )
            elif what is not None:
                doc["address"] = str(what)
                if event == "probe":
                    doc["family"] = f"ipv{getattr(what, 'version', 0)}"
            out.append(doc)
        return out


# Engine events that belong to an open round (they carry mac and domain).
_ROUND_EVENTS = frozenset({"takeover-held", "takeover", "remote-deleted", "confirmed", "gave-up"})
# Drops of an announcement for a MAC worth remembering ("why was it not restored?").
_ANNOUNCEMENT_DROPS = frozenset({RATE_LIMIT_PORT, RATE_LIMIT_GLOBAL, EXCLUDED_PORT})


class History:
    """The last rounds per MAC, built from the actions the engine returns."""

    def __init__(self, per_mac: int = PER_MAC, macs: int = MACS) -> None:
        self.per_mac = per_mac
        self.macs = macs
        self._by_mac: OrderedDict[str, deque[RoundRecord]] = OrderedDict()
        self._open: dict[tuple[str, str], RoundRecord] = {}  # (mac, domain) -> newest round
        self._latest: dict[bytes, RoundRecord] = {}  # MAC -> its newest open round (probes)
        self._by_address: dict[IPAddress, RoundRecord] = {}  # probed address -> its round
        self.pending: list[tuple[object, float]] = []  # see `note`

    def note(self, a: object, now: float) -> None:
        """A probe or resolve the engine handed to the shell at once (send-first: before
        the log line of its round); recorded with that round at the next `feed`."""
        if (type(a) is SendFrame or type(a) is Resolve) and len(self.pending) < PENDING_MAX:
            self.pending.append((a, now))

    def feed(self, actions: Iterable[object], now: float) -> None:
        """Record what `actions` (and the actions noted since the last feed) say. The
        round's announcement comes after its probes: events first, then frames."""
        frames = self.pending
        self.pending = []
        start = frames[0][1] if frames else now  # the round began with its first probe
        for a in actions:
            if type(a) is Log:
                self._event(a, start, now)
            elif type(a) is SendFrame or type(a) is Resolve:
                frames.append((a, now))
        for a, t in frames:
            if type(a) is SendFrame:
                rec = self._latest.get(a.mac)
                if rec is not None:
                    if self._by_address.get(a.target) is not rec:
                        self._by_address[a.target] = rec
                        rec.probed.append(a.target)
                    rec.add("probe", _ms(t - rec.started), a.target)
        for a, t in frames:  # after the probes, which tell which round an address is in
            if type(a) is Resolve:
                rec = self._by_address.get(a.address)
                if rec is not None:
                    rec.add("resolve", _ms(t - rec.started), a.address)

    def _event(self, a: Log, start: float, now: float) -> None:
        f = a.fields
        event = a.event
        if event == "announcement":
            rec = self._new(f, start)
            rec.port = str(f.get("port", ""))
            vni = f.get("vni")
            rec.vni = vni if isinstance(vni, int) else None
            rec.bindings = [str(b) for b in _as_list(f.get("bindings"))]
            if "result" in f:
                rec.result = str(f["result"])
                rec.ended = True
            else:
                self._open[(rec.mac, rec.domain)] = rec
                self._latest[bytes.fromhex(rec.mac.replace(":", ""))] = rec
            rec.add("trigger", 0.0, _TriggerFields(f))
        elif event in _ROUND_EVENTS:
            found = self._open.get((str(f.get("mac")), str(f.get("domain"))))
            if found is None:
                return
            at = f.get("after_ms")
            at_ms = float(at) if isinstance(at, int | float) else _ms(now - found.started)
            found.add(event, at_ms, f)
            if event == "confirmed":
                found.confirmed += 1
            elif event == "gave-up":
                found.gave_up += len(_as_list(f.get("addresses")))
                self._close(found)
        elif event == "dropped" and f.get("reason") in _ANNOUNCEMENT_DROPS and "mac" in f:
            rec = self._new({**f, "trigger": "", "domain": ""}, now)
            rec.port = str(f.get("port", ""))
            rec.result = str(f["reason"])
            rec.ended = True

    def _new(self, f: Mapping[str, object], now: float) -> RoundRecord:
        rec = RoundRecord(
            mac=str(f.get("mac")),
            domain=str(f.get("domain", "")),
            trigger=str(f.get("trigger", "")),
            started=now,
            wall=time.time(),
        )
        rounds = self._by_mac.get(rec.mac)
        if rounds is None:
            rounds = self._by_mac[rec.mac] = deque()
            while len(self._by_mac) > self.macs:
                _, gone = self._by_mac.popitem(last=False)
                for old in gone:
                    self._close(old)
        else:
            self._by_mac.move_to_end(rec.mac)
        if len(rounds) >= self.per_mac:
            self._close(rounds.popleft())
        rounds.append(rec)
        return rec

    def _close(self, rec: RoundRecord) -> None:
        rec.ended = True
        if self._open.get((rec.mac, rec.domain)) is rec:
            del self._open[(rec.mac, rec.domain)]
        mac = bytes.fromhex(rec.mac.replace(":", ""))
        if self._latest.get(mac) is rec:
            del self._latest[mac]
        for address in rec.probed:
            if self._by_address.get(address) is rec:
                del self._by_address[address]

    def rounds_of(self, mac: str) -> list[RoundRecord]:
        return list(self._by_mac.get(mac, ()))

    def sweep(self, engine: Engine) -> None:
        """Close records whose round the engine no longer has (finished without a
        confirmed/gave-up line: every address static, or none could be probed)."""
        live = {(format_mac(r.mac), r.domain.name) for r in engine.rounds()}
        for key, rec in list(self._open.items()):
            if key not in live:
                self._close(rec)

    def __len__(self) -> int:
        return sum(map(len, self._by_mac.values()))


class _TriggerFields(Mapping[str, object]):
    """The announcement's fields a `trigger` timeline entry shows, picked when shown."""

    _KEYS = ("trigger", "port", "moved_from", "no_source_address")

    def __init__(self, fields: Mapping[str, object]) -> None:
        self._f = fields

    def __getitem__(self, key: str) -> object:
        if key not in self._KEYS:
            raise KeyError(key)
        return self._f[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._KEYS if k in self._f)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def outcome(rec: RoundRecord) -> str:
    """confirmed, gave-up, partly-confirmed, open, ended, or why no round started."""
    if rec.result is not None:
        return rec.result
    if rec.gave_up:
        return "partly-confirmed" if rec.confirmed else "gave-up"
    if not rec.ended:
        return "open"
    return "confirmed" if rec.confirmed else "ended"


def _as_list(v: object) -> list[object]:
    return list(v) if isinstance(v, list | tuple) else []


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- documents -------------------------------------------------------------------


@dataclass
class State:
    """What a request reads: the daemon's parts, passed in by the I/O shell."""

    engine: Engine
    mirror: Mirror
    history: History
    version: str
    pid: int
    started: float  # time.monotonic() at start
    netns: str | None
    settings: Mapping[str, object]
    capture: tuple[int, int] | None  # (received, dropped) since start, all capture sockets
    capture_sockets: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def status(s: State, now: float) -> dict[str, Any]:
    received, dropped = s.capture if s.capture is not None else (0, 0)
    return {
        "command": "status",
        "version": s.version,
        "pid": s.pid,
        "uptime_s": round(now - s.started, 1),
        "netns": s.netns,
        "settings": dict(s.settings),
        "counters": dict(sorted(s.engine.stats.items())),
        "rounds_in_flight": len(s.engine.rounds()),
        "capture": {"sockets": s.capture_sockets, "received": received, "dropped": dropped},
        "mirror": s.mirror.counts(),
        **s.extra,
    }


def _vni(vni: int | None) -> dict[str, int]:
    """`vni`, only where the domain has one (a single VXLAN device's VLAN tunnel)."""
    return {} if vni is None else {"vni": vni}


def round_doc(r: Round, mirror: Mirror, now: float) -> dict[str, Any]:
    return {
        "mac": format_mac(r.mac),
        "domain": r.domain.name,
        **_vni(r.domain.vni),
        "trigger": r.trigger,
        "age_ms": _ms(now - r.started),
        "targets": [
            {
                "address": str(t.address),
                "interface": _ifname(mirror, t.ifindex),
                "state": t.state.value,
                "probes": t.probes,
                "resolves": t.resolves,
                "took_over": t.took_over,
                "confirmed_ms": None if t.confirmed_at is None else _ms(t.confirmed_at - r.started),
            }
            for t in r.targets.values()
        ],
    }


def rounds(s: State, now: float) -> dict[str, Any]:
    rs = sorted(s.engine.rounds(), key=lambda r: r.started)
    return {"command": "rounds", "rounds": [round_doc(r, s.mirror, now) for r in rs]}


def show(s: State, subject: bytes | IPAddress, now: float) -> dict[str, Any]:
    mirror = s.mirror
    if isinstance(subject, bytes):
        macs = [subject]
    else:
        # Every MAC the mirror binds this address to (on any interface).
        found = {
            n.lladdr
            for n in mirror.neighbors.values()
            if n.address == subject and n.lladdr is not None
        }
        macs = sorted(found)
    return {
        "command": "show",
        "query": format_mac(subject) if isinstance(subject, bytes) else str(subject),
        "macs": [_show_mac(s, mac, now) for mac in macs],
    }


def _show_mac(s: State, mac: bytes, now: float) -> dict[str, Any]:
    mirror, engine = s.mirror, s.engine
    text = format_mac(mac)
    bindings = [
        {
            "address": str(b.address),
            "interface": _ifname(mirror, b.neighbor.index),
            "state": nud_text(b.neighbor.state),
            "remote": b.neighbor.ext_learned,
            "protocol": b.neighbor.protocol,
            "live": b.live,
            **({} if b.deleted_at is None else {"deleted_ago_s": round(now - b.deleted_at, 1)}),
        }
        for b in mirror.bindings(mac, frozenset(mirror.links), now)
    ]
    fabric = GlobSet(engine.config.fabric_ports)
    fdb = []
    for (bridge, vlan, m), n in list(mirror.fdb.items()):
        if m != mac:
            continue
        where = resolve(mirror, n.index, vlan or None, engine.config.fabric_kinds, fabric)
        fdb.append(
            {
                "bridge": _ifname(mirror, bridge),
                "vlan": vlan or None,
                "port": _ifname(mirror, n.index),
                "remote": n.ext_learned,
                "domain": None if isinstance(where, Ignored) else where.name,
                # The entry's VLAN as the fabric carries it, on any port (a remote MAC's
                # too): what `bridge vlan tunnelshow` says for it.
                **(_vni(mirror.vni(bridge, vlan)) if vlan else {}),
                "port_role": where.reason if isinstance(where, Ignored) else "local",
            }
        )
    in_flight = [round_doc(r, mirror, now) for r in engine.rounds() if r.mac == mac]
    history = [
        {
            "domain": rec.domain,
            **_vni(rec.vni),
            "trigger": rec.trigger,
            "port": rec.port,
            "ago_s": round(now - rec.started, 1),
            "bindings": rec.bindings,
            "outcome": outcome(rec),
            "timeline": rec.events(),
        }
        for rec in reversed(s.history.rounds_of(text))
    ]
    return {
        "mac": text,
        "bindings": bindings,
        "fdb": fdb,
        "rounds_in_flight": in_flight,
        "history": history,
    }


def handle(line: bytes, s: State, now: float) -> dict[str, Any]:
    """One request line -> the response document (an `error` key when refused)."""
    try:
        req = parse_request(line)
    except RequestError as exc:
        return {"error": str(exc)}
    if req.command == "status":
        return status(s, now)
    if req.command == "rounds":
        return rounds(s, now)
    assert req.argument is not None
    return show(s, parse_subject(req.argument), now)


def encode(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":"), default=str) + "\n").encode()


def _ifname(mirror: Mirror, ifindex: int) -> str:
    link = mirror.links.get(ifindex)
    return link.name if link is not None else f"if{ifindex}"


# -- text ------------------------------------------------------------------------


def render(doc: Mapping[str, Any]) -> str:
    """The human form of a response document (what rarp-replyctl prints by default)."""
    cmd = doc.get("command")
    if cmd == "status":
        return _render_status(doc)
    if cmd == "rounds":
        rs = doc["rounds"]
        if not rs:
            return "no rounds in flight\n"
        return "".join(_render_round(r) for r in rs)
    if cmd == "show":
        return _render_show(doc)
    return json.dumps(doc) + "\n"


def _render_status(d: Mapping[str, Any]) -> str:
    cap = d["capture"]
    lines = [
        f"rarp-reply {d['version']}, pid {d['pid']}, up {d['uptime_s']} s, "
        f"namespace {d['netns'] or '(not a named one)'}",
        f"rounds in flight: {d['rounds_in_flight']}",
        f"capture: {cap['sockets']} sockets, {cap['received']} frames received, "
        f"{cap['dropped']} dropped by the kernel",
        "mirror: " + ", ".join(f"{k} {v}" for k, v in d["mirror"].items()),
        "counters:" if d["counters"] else "counters: all zero",
        *(f"  {k} {v}" for k, v in d["counters"].items()),
        "settings:",
        *(f"  {k} = {json.dumps(v)}" for k, v in d["settings"].items()),
    ]
    return "\n".join(lines) + "\n"


def _render_round(r: Mapping[str, Any]) -> str:
    vni = f" vni={r['vni']}" if "vni" in r else ""
    head = f"{r['mac']} {r['domain']}{vni} trigger={r['trigger']} age={r['age_ms']} ms\n"
    rows = "".join(
        f"  {t['address']} on {t['interface']}: {t['state']}, {t['probes']} probes"
        + (f", confirmed at {t['confirmed_ms']} ms" if t["confirmed_ms"] is not None else "")
        + (", took over" if t["took_over"] else "")
        + "\n"
        for t in r["targets"]
    )
    return head + rows


def _render_show(d: Mapping[str, Any]) -> str:
    if not d["macs"]:
        return f"{d['query']}: nothing in the mirror\n"
    out: list[str] = []
    for m in d["macs"]:
        out.append(f"{m['mac']}\n")
        out.append("  bindings:\n" if m["bindings"] else "  bindings: none\n")
        for b in m["bindings"]:
            extra = " remote(extern_learn)" if b["remote"] else ""
            if not b["live"]:
                extra += f" deleted {b.get('deleted_ago_s')} s ago"
            out.append(f"    {b['address']} on {b['interface']}: {b['state']}{extra}\n")
        out.append("  fdb:\n" if m["fdb"] else "  fdb: none\n")
        for f in m["fdb"]:
            vlan = f" vlan {f['vlan']}" if f["vlan"] else ""
            where = f"domain {f['domain']}" if f["domain"] else f["port_role"]
            if "vni" in f:
                where += f" vni {f['vni']}"
            out.append(f"    {f['bridge']}{vlan} port {f['port']} ({where})\n")
        for r in m["rounds_in_flight"]:
            out.append("  in flight: " + _render_round(r).replace("\n  ", "\n    "))
        out.append("  last rounds:\n" if m["history"] else "  last rounds: none\n")
        for h in m["history"]:
            out.append(
                f"    {h['ago_s']} s ago: {h['trigger'] or '-'} on {h['port']} "
                f"({h['domain'] or '-'}{' vni ' + str(h['vni']) if 'vni' in h else ''}): "
                f"{h['outcome']}\n"
            )
            for e in h["timeline"]:
                rest = " ".join(
                    f"{k}={_flat(v)}" for k, v in e.items() if k not in ("at_ms", "event")
                )
                out.append(f"      +{e['at_ms']} ms {e['event']} {rest}".rstrip() + "\n")
    return "".join(out)


def _flat(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)


__all__ = [
    "COMMANDS",
    "MAX_REQUEST",
    "History",
    "Request",
    "RequestError",
    "State",
    "encode",
    "handle",
    "parse_request",
    "render",
]
