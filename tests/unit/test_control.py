"""The control protocol (sans I/O) and its socket shell, without a daemon."""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from rarp_replay import control, controlsock
from rarp_replay.config import Settings
from rarp_replay.engine import Config, Engine
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.macaddr import format_mac
from tests.support.topology import PORT, SVI_MAC, VM_MAC, local, new, remote, switch

VM = format_mac(VM_MAC)
OTHER = "52:54:00:aa:bb:cc"


def arp_reply(ip: str) -> bytes:
    svi = format_mac(SVI_MAC)
    return bytes(
        Ether(dst=svi, src=VM) / ARP(op=2, hwsrc=VM, psrc=ip, hwdst=svi, pdst="192.0.2.252")
    )


def state(engine: Engine, history: control.History) -> control.State:
    return control.State(
        engine=engine,
        mirror=engine.mirror,
        history=history,
        version="9.9",
        pid=1234,
        started=0.0,
        netns="asic0",
        settings=Settings().as_dict(),
        capture=(10, 2),
        capture_sockets=8,
    )


def migrate() -> tuple[Engine, control.History]:
    """A RARP for a VM behind EVPN's remote entry, its answer, the takeover, confirmation.
    With `takeover-delay` 0 (make-before-break, not the default), so that the documents
    show a takeover at the answer's time."""
    eng = Engine(
        switch(remote("192.0.2.10"), remote("2001:db8:100::10")), Config(takeover_delay=0.0)
    )
    hist = control.History()
    hist.feed(eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 1.0), 1.0)
    hist.feed(eng.on_frame(arp_reply(ip="192.0.2.10"), PORT, None, 1.012), 1.012)
    ev = new(local("192.0.2.10"))
    eng.mirror.apply(ev, 1.02)
    hist.feed(eng.on_netlink(ev, 1.02), 1.02)
    return eng, hist


# -- requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"status\n", control.Request("status")),
        (b"rounds", control.Request("rounds")),
        (b"  show 52:54:00:12:34:56 \r\n", control.Request("show", "52:54:00:12:34:56")),
        (b"show 2001:db8::1\n", control.Request("show", "2001:db8::1")),
    ],
)
def test_parse_request(line: bytes, expected: control.Request) -> None:
    assert control.parse_request(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "unknown request"),
        (b"reload\n", "unknown request 'reload'"),  # nothing that changes the daemon
        (b"send 52:54:00:12:34:56\n", "unknown request"),
        (b"status now\n", "status takes no argument"),
        (b"show\n", "show takes one argument"),
        (b"show zz\n", "not a MAC or IP address: 'zz'"),
        (b"show \xff\n", "not ASCII"),
        (b"status" + b" " * 2000, "longer than 1024"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(line: bytes, message: str) -> None:
    with pytest.raises(control.RequestError, match=message):
        control.parse_request(line)
    eng, hist = migrate()
    doc = control.handle(line, state(eng, hist), 2.0)
    assert list(doc) == ["error"] and message.split("'", maxsplit=1)[0] in doc["error"]


# -- documents -----------------------------------------------------------------------


def test_status_document() -> None:
    eng, hist = migrate()
    doc = control.handle(b"status\n", state(eng, hist), 61.0)
    assert doc["command"] == "status" and doc["version"] == "9.9" and doc["pid"] == 1234
    assert doc["uptime_s"] == 61.0 and doc["netns"] == "asic0"
    assert doc["capture"] == {"sockets": 8, "received": 10, "dropped": 2}
    assert doc["rounds_in_flight"] == 1  # the IPv6 address is still followed
    assert doc["counters"]["takeovers"] == 1 and doc["counters"]["confirmed"] == 1
    assert doc["settings"]["holddown"] == 5.0 and doc["settings"]["include"] == []
    assert doc["mirror"]["neighbors"] == 2
    json.dumps(doc)  # JSON all the way down
    text = control.render(doc)
    assert "pid 1234" in text and "10 frames received, 2 dropped" in text


def test_rounds_document() -> None:
    eng, hist = migrate()
    doc = control.handle(b"rounds\n", state(eng, hist), 1.5)
    [r] = doc["rounds"]
    assert r["mac"] == VM and r["domain"] == "br100" and r["trigger"] == "rarp"
    assert r["age_ms"] == 500.0
    by_addr = {t["address"]: t for t in r["targets"]}
    v4, v6 = by_addr["192.0.2.10"], by_addr["2001:db8:100::10"]
    assert v4["state"] == "confirmed" and v4["took_over"] and v4["confirmed_ms"] == 20.0
    assert v4["interface"] == "br100" and v4["probes"] == 1
    assert v6["state"] == "remote" and v6["confirmed_ms"] is None
    assert "192.0.2.10 on br100: confirmed, 1 probes, confirmed at 20.0 ms" in control.render(doc)


def test_show_mac_has_bindings_and_the_round_timeline() -> None:
    eng, hist = migrate()
    doc = control.handle(f"show {VM}\n".encode(), state(eng, hist), 2.0)
    [m] = doc["macs"]
    assert m["mac"] == VM
    got = {b["address"]: b for b in m["bindings"]}
    assert got["192.0.2.10"]["state"] == "reachable" and not got["192.0.2.10"]["remote"]
    assert got["2001:db8:100::10"]["state"] == "noarp" and got["2001:db8:100::10"]["remote"]
    [h] = m["history"]
    assert h["trigger"] == "rarp" and h["outcome"] == "open" and h["domain"] == "br100"
    steps = [(e["event"], e.get("address"), e["at_ms"]) for e in h["timeline"]]
    assert steps[0] == ("trigger", None, 0.0)
    assert ("probe", "192.0.2.10", 0.0) in steps and ("probe", "2001:db8:100::10", 0.0) in steps
    assert ("takeover", "192.0.2.10", 12.0) in steps
    assert ("confirmed", "192.0.2.10", 20.0) in steps
    # In time order.
    assert [s[2] for s in steps] == sorted(s[2] for s in steps)
    [flying] = m["rounds_in_flight"]
    assert flying["mac"] == VM
    text = control.render(doc)
    assert "+12.0 ms takeover address=192.0.2.10" in text


def test_show_ip_finds_the_mac_and_unknown_ones_say_so() -> None:
    eng, hist = migrate()
    doc = control.handle(b"show 192.0.2.10\n", state(eng, hist), 2.0)
    assert doc["query"] == "192.0.2.10" and [m["mac"] for m in doc["macs"]] == [VM]
    none = control.handle(b"show 192.0.2.99\n", state(eng, hist), 2.0)
    assert none["macs"] == [] and "nothing in the mirror" in control.render(none)


def test_outcomes_gave_up_unknown_mac_and_sweep() -> None:
    eng = Engine(switch(remote("192.0.2.10")), Config(give_up=5.0))
    hist = control.History()
    hist.feed(eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 1.0), 1.0)
    hist.feed(eng.tick(7.0), 7.0)
    [rec] = hist.rounds_of(VM)
    assert control.outcome(rec) == "gave-up"
    last = rec.events()[-1]
    assert last["event"] == "gave-up" and last["at_ms"] == 6000.0
    assert last["addresses"] == ["192.0.2.10"]
    # A MAC with no binding: no round, but the announcement and why are kept.
    hist.feed(eng.on_frame(rarp_request_frame(bytes.fromhex("5254ffaabbcc")), PORT, None, 8), 8)
    [unknown] = hist.rounds_of("52:54:ff:aa:bb:cc")
    assert control.outcome(unknown) == "unknown-mac"
    # A round that ends without a line of its own (a static entry: probed once).
    static = local("192.0.2.20", bytes.fromhex("5254000000aa"), state=0x80)
    eng2 = Engine(switch(static))
    hist2 = control.History()
    hist2.feed(eng2.on_frame(rarp_request_frame(static.lladdr or b""), PORT, None, 1.0), 1.0)
    [r2] = hist2.rounds_of("52:54:00:00:00:aa")
    hist2.sweep(eng2)
    assert control.outcome(r2) == "ended"


def test_history_is_bounded() -> None:
    hist = control.History(per_mac=2, macs=3)
    eng = Engine(switch(*(remote(f"192.0.2.{i}", bytes([2, 0, 0, 0, 0, i])) for i in range(1, 6))))
    eng.config = Config(holddown=0.0)
    for i in range(1, 6):
        frame = rarp_request_frame(bytes([2, 0, 0, 0, 0, i]))
        for k in range(3):
            now = float(i * 10 + k)
            hist.feed(eng.on_frame(frame, PORT, None, now), now)
    assert len(hist) == 3 * 2  # 3 MACs (the latest), 2 rounds each
    assert hist.rounds_of("02:00:00:00:00:01") == []
    assert len(hist.rounds_of("02:00:00:00:00:05")) == 2


# -- the socket shell ------------------------------------------------------------------


class Loop:
    """The daemon's loop reduced to the control server."""

    def __init__(self, path: str, **kw: Any) -> None:
        self.answered: list[bytes] = []

        def answer(line: bytes, now: float) -> dict[str, Any]:
            self.answered.append(line)
            return {"command": "echo", "line": line.decode(), "pad": "x" * 300_000}

        self.server = controlsock.ControlServer(path, answer, **kw)
        self.poller = select.poll()
        self.server.attach(self.poller)

    def spin(self, seconds: float) -> None:
        """Serve for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for fd, ev in self.poller.poll(20):
                if self.server.owns(fd):
                    self.server.on_ready(fd, ev, time.monotonic())
            self.server.expire(time.monotonic())


def test_server_answers_and_survives_hostile_clients(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "ctl.sock")
    loop = Loop(path, deadline=1.0, max_clients=4)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o750
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(path)  # connects and sends nothing
    flood = socket.socket(socket.AF_UNIX)
    flood.connect(path)
    flood.send(b"x" * 5000)  # no newline, over the limit
    reader = socket.socket(socket.AF_UNIX)
    reader.connect(path)
    reader.send(b"status\n")  # and never reads its 300 KB answer
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop.spin(0.05)
    # Nothing blocks the loop: with all three still connected, a good client is served.
    assert _ask(loop, path, "status")["line"] == "status"
    assert len(loop.server.clients) == 2  # the silent one and the non-reader, still there
    # The over-long request got an error answer, not a hang.
    flood.settimeout(2)
    assert b"longer than 1024" in flood.recv(4096)
    loop.spin(1.2)
    assert loop.server.clients == {}  # the silent one and the non-reader timed out
    assert loop.server.stats["timeouts"] == 2
    # And a good client is served afterwards.
    doc = _ask(loop, path, "rounds")
    assert doc["line"] == "rounds"
    for s in (silent, flood, reader):
        s.close()
    loop.server.close()
    assert not os.path.exists(path)


def test_server_bounds_simultaneous_clients(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    loop = Loop(path, deadline=5.0, max_clients=3)
    idle = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    for s in idle:
        s.connect(path)
    loop.spin(0.1)
    assert len(loop.server.clients) == 3 and loop.server.stats["refused"] == 2
    for s in idle:
        s.close()
    loop.spin(0.1)
    assert loop.server.clients == {}  # closed without a word: dropped
    loop.server.close()


def _ask(loop: Loop, path: str, line: str) -> dict[str, Any]:
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.send(line.encode() + b"\n")
    c.setblocking(False)
    data = b""
    end = time.monotonic() + 3
    while time.monotonic() < end:
        loop.spin(0.02)
        try:
            chunk = c.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
    c.close()
    doc: dict[str, Any] = json.loads(data)
    return doc


def test_a_stale_socket_file_is_replaced_a_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: a daemon that was killed
    loop = Loop(path)
    with pytest.raises(controlsock.RarpReplayError, match="another daemon answers"):
        controlsock.ControlServer(path, lambda line, now: {})
    loop.server.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(controlsock.RarpReplayError, match="not a socket"):
        controlsock.ControlServer(str(tmp_path / "file"), lambda line, now: {})


def test_namespace_claim_names_the_holder() -> None:
    name = f"\0rarp-replay-test-{os.getpid()}-{time.monotonic_ns()}".encode()
    held = controlsock.claim_namespace(name)
    try:
        with pytest.raises(controlsock.AlreadyRunningError, match=f"PID {os.getpid()}"):
            controlsock.claim_namespace(name)
        assert controlsock.holder_pid(name) == os.getpid()
        controlsock.drain_lock(held)  # the asks above were accepted and closed
    finally:
        held.close()
    controlsock.claim_namespace(name).close()  # released with the socket


def test_socket_paths(tmp_path: Path) -> None:
    run = str(tmp_path)
    assert controlsock.socket_path("asic0", run) == f"{run}/asic0.sock"
    assert controlsock.socket_path("a b", run) == f"{run}/a_b.sock"
    with pytest.raises(controlsock.RarpReplayError, match="not found"):
        controlsock.socket_path("/nonexistent/ns", run)
    # A path namespace is named by its inode (unless `ip netns` also names it).
    path = controlsock.socket_path("/proc/self/ns/net", run)
    ino = os.stat("/proc/self/ns/net").st_ino
    assert path in (f"{run}/netns-{ino}.sock", controlsock.socket_path(None, run))


def test_timeline_has_resolves_for_addresses_nothing_is_in_the_way_of() -> None:
    # A local (STALE) binding: the engine asks the kernel to resolve it, then probes.
    eng = Engine(switch(local("192.0.2.10", state=0x04)), Config())
    hist = control.History()
    hist.feed(eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 1.0), 1.0)
    hist.feed(eng.tick(1.25), 1.25)  # the first retry (0.2 s)
    [rec] = hist.rounds_of(VM)
    steps = [(e["event"], e.get("address"), e["at_ms"]) for e in rec.events()]
    assert steps == [
        ("trigger", None, 0.0),
        ("probe", "192.0.2.10", 0.0),
        ("resolve", "192.0.2.10", 0.0),
        ("probe", "192.0.2.10", 250.0),
        ("resolve", "192.0.2.10", 250.0),
    ], steps
    assert rec.events()[1]["family"] == "ipv4"


def test_send_first_probes_are_noted_and_join_their_round() -> None:
    """The daemon gives the engine a `send` callback: probes go out before the round's
    announcement line exists. They are noted, and joined to the round at the next feed."""
    hist = control.History()
    clock = [1.0]

    def sent(a: object) -> None:
        hist.note(a, clock[0])
        clock[0] += 0.001  # each send takes a millisecond

    eng = Engine(switch(local("192.0.2.10", state=0x04), remote("2001:db8:100::10")), send=sent)
    actions = eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 1.0)
    assert not [a for a in actions if not isinstance(a, control.Log)]  # all sent at once
    hist.feed(actions, clock[0])
    [rec] = hist.rounds_of(VM)
    steps = [(e["event"], e.get("address"), e["at_ms"]) for e in rec.events()]
    assert steps[0] == ("trigger", None, 0.0)
    probed = sorted(s[1] for s in steps if s[0] == "probe")
    assert probed == ["192.0.2.10", "2001:db8:100::10"], steps
    assert ("resolve", "192.0.2.10") in {s[:2] for s in steps}, steps
    assert all(0.0 <= s[2] < 5.0 for s in steps), steps  # ms from the first send, not negative
    assert hist.pending == []
