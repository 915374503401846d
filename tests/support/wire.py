"""The project's own packet sockets inside a namespace, for tests that send with
`PacketSender` or read with `RarpCapture` (a socket keeps the namespace it was made in)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.macaddr import parse_mac
from rarp_replay.packetsock import PacketSender, RarpCapture, Sighting
from tests.support import netlab

SENTINEL = "02:5e:00:00:00:ff"


def send_sentinel(ns: netlab.Netns, ifname: str) -> None:
    """A last frame (a RARP for SENTINEL): once it is seen, everything sent before it from
    the same socket path has been delivered."""
    with netlab.entered(ns.name), PacketSender(ifname) as sender:
        sender.send(rarp_request_frame(parse_mac(SENTINEL)))


@contextlib.contextmanager
def capture_in(ns: netlab.Netns) -> Iterator[RarpCapture]:
    """A RarpCapture whose socket lives in `ns`, closed when the block ends."""
    with netlab.entered(ns.name):
        cap = RarpCapture(capture_filter())
    try:
        yield cap
    finally:
        cap.close()


def collect_until(
    cap: RarpCapture, done: Callable[[list[Sighting]], bool], timeout: float = 5.0
) -> list[Sighting]:
    got: list[Sighting] = []

    def poll() -> bool:
        got.extend(cap.recv_batch())
        return done(got)

    netlab.wait_until(poll, timeout=timeout, interval=0.005, what="sightings")
    # Frames sent from different CPUs may be processed out of order: a short grace period.
    time.sleep(0.1)
    got.extend(cap.recv_batch())
    return got


def saw_mac(mac: str) -> Callable[[list[Sighting]], bool]:
    raw = parse_mac(mac)
    return lambda got: any(s.data[6:12] == raw for s in got)
