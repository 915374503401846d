"""A client's view of a migration: ICMP echo to the VM every 10 ms, and what it felt.

`Pinger` is the I/O (a raw ICMP or ICMPv6 socket in the client's namespace: one thread
sends, the `Reader` thread stamps each reply with its kernel receive time);
`ping_outcome` is the arithmetic, pure so that it is tested on its own.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rarp_replay.frames.ipv6 import internet_checksum
from tests.support.netlab import SCM_TIMESTAMPNS, SO_TIMESTAMPNS, SOL_SOCKET, Netns, Reader

INTERVAL = 0.01  # seconds between echo requests: the "every 10 ms"
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0  # RFC 792
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129  # RFC 4443
PAYLOAD = b"rarp-replay-pinger".ljust(32, b".")


@dataclass(frozen=True)
class PingOutcome:
    """What one client felt across one migration (times in seconds)."""

    restored: bool  # reached again within the timeout, and still reached at the end
    downtime: float | None  # t0 to the first reply to an echo sent after the move (or None)
    lost_again: bool  # reached after the move, then no reply in the last `grace` seconds
    last_reply: float | None  # the last reply's time minus t0
    # From t0 to the first reply of the final run without a `grace` gap (None: no reply
    # after the move): later than `downtime` when replies stopped again for a while, e.g.
    # between the old leaf's withdrawal and the new leaf's route.
    stable_from: float | None
    longest_gap: float  # longest time without a reply, the end of pinging included
    sent: int
    received: int


def ping_outcome(
    sent: Sequence[tuple[int, float]],
    replies: Sequence[tuple[int, float]],
    *,
    moved: float,
    t0: float,
    end: float,
    timeout: float,
    grace: float = 0.25,
) -> PingOutcome:
    """Judge one client's pings: `sent` and `replies` are (sequence, time) pairs.

    `moved` is when the VM's cable moved, `t0` when the fabric was first told (the first
    RARP, or the FDB entry where there is none), `end` when pinging stopped. Only a reply
    to an echo sent at or after `moved` proves the VM is reachable where it now is: an
    earlier echo may have been answered before the move. A client that got the VM back
    and lost it again (no reply in the last `grace` seconds) is not restored: that is
    what a remote leaf's zebra deleting its entry after the old leaf's withdrawal does.
    """
    sent_at = dict(sent)
    after = sorted(t for seq, t in replies if sent_at.get(seq, -1.0) >= moved)
    downtime = after[0] - t0 if after else None
    times = sorted(t for _seq, t in replies)
    marks = [*times, end]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    if sent:
        gaps.append(marks[0] - min(t for _s, t in sent))
    lost_again = bool(after) and after[-1] < end - grace
    resumed = next(
        (b for a, b in reversed(list(itertools.pairwise(after))) if b - a > grace),
        after[0] if after else None,
    )
    return PingOutcome(
        restored=downtime is not None and downtime <= timeout and not lost_again,
        downtime=downtime,
        lost_again=lost_again,
        last_reply=times[-1] - t0 if times else None,
        stable_from=None if resumed is None else resumed - t0,
        longest_gap=max(gaps, default=0.0),
        sent=len(sent),
        received=len(replies),
    )


def echo_request(ident: int, seq: int, ipv6: bool) -> bytes:
    """An ICMP (or ICMPv6) echo request. The kernel fills in the ICMPv6 checksum for a raw
    ICMPv6 socket (RFC 3542, section 3.1); ICMP's is ours (RFC 792)."""
    kind = ICMP6_ECHO_REQUEST if ipv6 else ICMP_ECHO_REQUEST
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if ipv6:
        return head + PAYLOAD
    csum = internet_checksum(head + PAYLOAD)
    return head[:2] + struct.pack("!H", csum) + head[4:] + PAYLOAD


def parse_echo_reply(data: bytes, ident: int, ipv6: bool) -> int | None:
    """The sequence number of an echo reply to `ident` (None for anything else). A raw ICMP
    socket hands over the IPv4 header too, a raw ICMPv6 socket only the message."""
    if not ipv6:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0xF) * 4 :]
    if len(data) < 8:
        return None
    kind, _code, _csum, rid, seq = struct.unpack_from("!BBHHH", data)
    if kind != (ICMP6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY) or rid != ident:
        return None
    return int(seq)


class Pinger(Reader[tuple[int, float]]):
    """Echo requests from `ns` to `dst` every `interval`; replies as (seq, kernel time)."""

    def __init__(self, ns: Netns, dst: str, interval: float = INTERVAL) -> None:
        self.dst = dst
        self.ipv6 = ":" in dst
        self.interval = interval
        self.ident = secrets.randbits(16)
        self.sent: list[tuple[int, float]] = []
        self.send_errors = 0
        family, proto = (
            (socket.AF_INET6, socket.IPPROTO_ICMPV6)
            if self.ipv6
            else (socket.AF_INET, socket.IPPROTO_ICMP)
        )
        sock = ns.socket(family, socket.SOCK_RAW, proto)
        sock.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._running = True
        super().__init__(sock, f"{ns.name} ping {dst}")
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name=f"ping {dst}")
        self._sender.start()

    def read(self, sock: socket.socket) -> list[tuple[int, float]]:
        data, anc, _flags, _addr = sock.recvmsg(2048, 256)
        seq = parse_echo_reply(data, self.ident, self.ipv6)
        if seq is None:
            return []
        ts = time.time()
        for level, kind, payload in anc:
            if level == SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = struct.unpack_from("=qq", payload)
                ts = sec + nsec / 1e9
        return [(seq, ts)]

    def _send_loop(self) -> None:
        start = time.monotonic()
        n = 0
        while self._running:
            n += 1
            seq = n & 0xFFFF
            try:
                self._sock.sendto(echo_request(self.ident, seq, self.ipv6), (self.dst, 0))
                self.sent.append((seq, time.time()))
            except OSError:
                # No route or neighbour on the client itself: counted; the fabric's
                # failures show as missing replies, not as errors here.
                self.send_errors += 1
            delay = start + n * self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def replied_since(self, since: float) -> bool:
        return bool(self.matching(lambda r: r[1] >= since))

    def stop(self) -> float:
        """Stop sending (replies still in flight are read for one more interval); return
        the time sending stopped."""
        self._running = False
        self._sender.join(timeout=1)
        stopped = time.time()
        time.sleep(self.interval)
        self.close()
        return stopped

    def outcome(
        self, *, moved: float, t0: float, end: float, timeout: float, grace: float
    ) -> PingOutcome:
        return ping_outcome(
            list(self.sent), self.matching(), moved=moved, t0=t0, end=end, timeout=timeout,
            grace=grace,
        )  # fmt: skip
