"""A thin rtnetlink socket adapter over the pure `codec`.

Use two sockets: one bound to multicast groups for notifications
(`recv_events`), one with no groups for dumps and requests. A dump or an ack
read from a subscribed socket would have to step over notifications, and
notifications read while waiting for an ack would be lost to the caller.

To build a consistent mirror, subscribe first, then dump on the other socket,
then apply the notifications: every change after the dump's snapshot is then
queued on the subscribed socket (each notification carries a full record, so
applying one that predates the snapshot is harmless).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from ipaddress import ip_address

from rarp_replay.errors import NetlinkError, NetlinkOverrunError
from rarp_replay.netlink.codec import (
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    SOL_NETLINK,
    decode_error,
    decode_span,
    dump_request,
    iter_spans,
    neigh_request,
    set_seq,
)
from rarp_replay.netlink.records import AF_UNSPEC, NTF_USE, Event, IPAddress
from rarp_replay.sockbase import OwnedSocket

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SOCK_CLOEXEC = getattr(socket, "SOCK_CLOEXEC", 0o2000000)
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)

# Big enough for any datagram the kernel sends here: dump skbs are capped near 32 KiB
# (netlink_dump sizes them from the largest recvmsg() buffer seen, at most 32 KiB, or
# the handler's min_dump_alloc for a huge link), notifications are single messages.
_RECV_BUFFER = 1 << 20

DEFAULT_TIMEOUT = 10.0  # seconds a dump or a request may wait for the kernel's next reply
DUMP_ATTEMPTS = 5


def _as_ip(address: IPAddress | str) -> IPAddress:
    return ip_address(address) if isinstance(address, str) else address


class RtnlSocket(OwnedSocket):
    """An AF_NETLINK/NETLINK_ROUTE socket speaking `codec` records.

    `groups` is the RTMGRP_* bitmask to subscribe to (0 for a dump/request socket).
    `rcvbuf` is the receive buffer asked for with SO_RCVBUFFORCE (root, or CAP_NET_ADMIN,
    may exceed net.core.rmem_max), falling back to SO_RCVBUF (capped by rmem_max) when not
    permitted. The kernel doubles the value it stores, to account for skb overhead.
    """

    def __init__(
        self, groups: int = 0, rcvbuf: int = 4 << 20, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.groups = groups
        self.timeout = timeout
        self._seq = 0
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            # Extended acks carry the kernel's own error text ("FDB entry not found"...);
            # capped acks echo only the request's header, not the whole request.
            # Both are optional (kernels before 4.12 / 4.3): plain acks work without them.
            for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                with contextlib.suppress(OSError):
                    sock.setsockopt(SOL_NETLINK, option, 1)
            sock.bind((0, groups))
            # Never block in recv(): recv_events() must return at once when nothing is
            # pending; dumps and requests wait in poll() with a timeout instead.
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise NetlinkError(f"cannot open rtnetlink socket: {exc}", exc.errno or 0) from exc
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._buf = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buf)

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._poll.unregister(self._sock.fileno())
        super().close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _send(self, msg: bytes) -> None:
        try:
            self._sock.send(msg)
        except OSError as exc:
            raise NetlinkError(f"netlink send failed: {exc}", exc.errno or 0) from exc

    def _recv(self, block: bool) -> bytes | None:
        """One datagram from the kernel as bytes, or None when none is pending (block=False).

        Raises NetlinkOverrunError on ENOBUFS: the kernel reports it once when a multicast
        listener's receive buffer overflowed, i.e. notifications were dropped.
        """
        while True:
            try:
                # MSG_TRUNC makes recvfrom return the datagram's real length, so a
                # datagram cut short by our buffer is detected instead of mis-parsed.
                n, (pid, _groups) = self._sock.recvfrom_into(self._buf, 0, MSG_TRUNC)
            except BlockingIOError:
                if not block:
                    return None
                if not self._poll.poll(self.timeout * 1000):
                    raise NetlinkError(
                        f"no reply from the kernel in {self.timeout}s", errno.ETIMEDOUT
                    ) from None
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise NetlinkOverrunError(
                        "netlink receive buffer overrun: notifications were lost", errno.ENOBUFS
                    ) from exc
                raise NetlinkError(f"netlink receive failed: {exc}", exc.errno or 0) from exc
            if n > len(self._buf):
                raise NetlinkError(f"netlink datagram of {n} bytes truncated to {len(self._buf)}")
            if pid != 0:
                # Only the kernel (port id 0) speaks for rtnetlink; a privileged process may
                # also multicast to the groups, and nothing it says is trusted.
                continue
            return bytes(self._view[:n])

    @staticmethod
    def _error(what: str, body: bytes, flags: int) -> NetlinkError:
        code, text = decode_error(body, flags)
        detail = f"{what}: {os.strerror(code)}"
        if text:
            detail += f" ({text})"
        return NetlinkError(detail, code)

    # --- dumps --------------------------------------------------------------------------------

    def dump(
        self,
        msg_type: int,
        family: int = AF_UNSPEC,
        *,
        ext_mask: int = 0,
        attempts: int = DUMP_ATTEMPTS,
    ) -> list[Event]:
        """Dump a whole table (RTM_GETLINK/GETADDR/GETNEIGH) and decode it.

        The kernel marks the messages of a dump with NLM_F_DUMP_INTR when the table changed
        while it was being walked in several parts (entries may be missing or repeated);
        such a dump is read to its end and retried, up to `attempts` times, after which
        NetlinkError(EINTR) is raised. `ext_mask`: IFLA_EXT_MASK of an RTM_GETLINK dump
        (RTEXT_FILTER_BRVLAN_COMPRESSED with AF_BRIDGE: the bridges' VLANs).
        """
        for _attempt in range(attempts):
            events, interrupted = self._dump_once(msg_type, family, ext_mask)
            if not interrupted:
                return events
        raise NetlinkError(
            f"dump of type {msg_type} interrupted by changes {attempts} times in a row",
            errno.EINTR,
        )

    def _dump_once(self, msg_type: int, family: int, ext_mask: int) -> tuple[list[Event], bool]:
        seq = self._next_seq()
        self._send(dump_request(msg_type, family, seq, ext_mask=ext_mask))
        events: list[Event] = []
        append = events.append
        interrupted = False
        while True:
            data = self._recv(block=True)
            assert data is not None
            for mtype, flags, mseq, start, end in iter_spans(data):
                if mseq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype == NLMSG_DONE:
                    # NLMSG_DONE carries an int: negative when the dump failed part way.
                    if end - start >= 4:
                        code, _text = decode_error(data[start:end], flags)
                        if code:
                            raise self._error(f"dump of type {msg_type}", data[start:end], flags)
                    return events, interrupted
                if mtype == NLMSG_ERROR:
                    raise self._error(f"dump of type {msg_type}", data[start:end], flags)
                event = decode_span(mtype, data, start, end)
                if event is not None:
                    append(event)

    # --- notifications ------------------------------------------------------------------------

    def recv_events(self, max_bytes: int = 4 << 20) -> list[Event]:
        """Decode every notification pending on the socket, without blocking.

        Reads until the socket is empty or about `max_bytes` were read (so one call's work
        stays bounded; call again while `fileno()` is readable). Returns [] when nothing is
        pending. Raises NetlinkOverrunError if the kernel dropped notifications (ENOBUFS): the
        caller must `drain()` and then re-dump; events read by this call before the overrun
        are discarded with it, as the re-dump supersedes them.
        """
        events: list[Event] = []
        append = events.append
        total = 0
        while total < max_bytes:
            data = self._recv(block=False)
            if data is None:
                break
            total += len(data)
            for mtype, _flags, _seq, start, end in iter_spans(data):
                if mtype == NLMSG_OVERRUN:
                    raise NetlinkOverrunError("kernel reported NLMSG_OVERRUN", errno.ENOBUFS)
                event = decode_span(mtype, data, start, end)
                if event is not None:
                    append(event)
        return events

    def drain(self, max_bytes: int) -> int:
        """Read and discard what is queued (up to about `max_bytes`); returns the bytes read.

        After an overrun, call this *before* re-dumping. The queue still holds the
        notifications that fitted before the kernel started dropping: older than the
        re-dump, applied after it they would bring back entries deleted since (the deletion
        was among the dropped). And the kernel keeps dropping every new notification until
        the queue has been emptied (NETLINK_S_CONGESTED, cleared in netlink_rcv_wake), so
        changes made while a re-dump runs ahead of the drain would be lost without a trace.
        """
        total = 0
        while total < max_bytes:
            try:
                data = self._recv(block=False)
            except NetlinkOverrunError:
                continue  # flagged again: the re-dump that follows covers it too
            if data is None:
                break
            total += len(data)
        return total

    # --- requests -----------------------------------------------------------------------------

    def request(self, msg: bytes) -> None:
        """Send one request (NLM_F_REQUEST | NLM_F_ACK are added, the sequence number is
        the socket's own) and wait for its acknowledgment.

        Raises NetlinkError(message, errno) when the kernel answers with an error.
        """
        seq = self._next_seq()
        self._send(set_seq(msg, seq, NLM_F_REQUEST | NLM_F_ACK))
        while True:
            data = self._recv(block=True)
            assert data is not None
            for mtype, flags, mseq, start, end in iter_spans(data):
                if mseq != seq or mtype != NLMSG_ERROR:
                    continue  # echoes, or late replies to an abandoned request
                body = data[start:end]
                code, _text = decode_error(body, flags)
                if code:
                    raise self._error("netlink request", body, flags)
                return

    def neigh_replace(  # noqa: PLR0917 (the documented positional signature)
        self,
        index: int,
        address: IPAddress | str,
        lladdr: bytes,
        state: int,
        flags: int = 0,
        protocol: int = 0,
    ) -> None:
        """Create or overwrite an ARP/ND entry (`ip neigh replace`)."""
        self.request(
            neigh_request(
                RTM_NEWNEIGH,
                index=index,
                address=_as_ip(address),
                lladdr=lladdr,
                state=state,
                flags=flags,
                protocol=protocol,
            )
        )

    def neigh_use(self, index: int, address: IPAddress | str, protocol: int = 0) -> None:
        """Ask the kernel to resolve `address` on `index` itself (RTM_NEWNEIGH, NTF_USE,
        state 0): the entry is created if missing and goes INCOMPLETE while the kernel
        sends its own ARP request / Neighbor Solicitation, then REACHABLE or FAILED; an
        existing STALE entry is re-validated (DELAY, PROBE).

        With `protocol`, an entry this call *creates* carries it (NDA_PROTOCOL: the kernel
        sets it before acting on NTF_USE, __neigh_add), so that its creator can recognise
        it later. An existing entry keeps its own: the first request may only create
        (NLM_F_EXCL); when the entry exists (EEXIST) a second one resolves it without a
        protocol attribute, which leaves the entry's protocol as it was."""
        addr = _as_ip(address)
        if protocol:
            try:
                self.request(
                    neigh_request(
                        RTM_NEWNEIGH,
                        index=index,
                        address=addr,
                        flags=NTF_USE,
                        protocol=protocol,
                        nlm_flags=NLM_F_CREATE | NLM_F_EXCL,
                    )
                )
                return
            except NetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        self.request(neigh_request(RTM_NEWNEIGH, index=index, address=addr, flags=NTF_USE))

    def neigh_delete(self, index: int, address: IPAddress | str) -> None:
        """Delete an ARP/ND entry; NetlinkError(ENOENT) if there is none."""
        self.request(neigh_request(RTM_DELNEIGH, index=index, address=_as_ip(address)))
