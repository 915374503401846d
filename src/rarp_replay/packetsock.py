"""AF_PACKET sockets: thin I/O for sending frames and capturing RARP. No protocol decisions.

The frames a capture socket takes are decided by the classic BPF program it is
given (`frames.capture.capture_filter`): no EtherType, opcode or offset is known here.

Three classes:

* `PacketSender` sends complete Ethernet frames, either on the one interface it
  is bound to (`send`) or, unbound, on any interface by index (`send_on`).
* `RarpCapture` is one capture socket: unbound (serves every interface,
  including ones created later), kernel-filtered by the program it is given,
  and reads frames in batches with their ifindex, VLAN tag (from
  PACKET_AUXDATA) and kernel receive timestamp.
* `CaptureGroup` is the daemon's capture: `CAPTURE_SOCKETS` RarpCaptures in one
  PACKET_FANOUT group that the kernel feeds by ingress ifindex, so a port that
  floods fills only its own socket's queue and not the other ports'.

Addresses go through `struct sockaddr_ll` built here and passed to libc
directly, because Python's AF_PACKET address tuples name the interface rather
than its index: every `bind`/`sendto` would resolve the name (a rename race and
an extra ioctl) and every `recvmsg` would turn the index back into a name.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import math
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from .errors import CapabilityError, InterfaceError
from .frames.bpf import (
    BPF_MAXINSNS,
    LD_W_ABS,
    MOD_K,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    RET_A,
    SKF_AD_IFINDEX,
    SKF_AD_OFF,
    Program,
    stmt,
)
from .sockbase import OwnedSocket

__all__ = [
    "CAPTURE_SOCKETS",
    "DEFAULT_RCVBUF",
    "ETH_P_ALL",
    "PACKET_BROADCAST",
    "PACKET_HOST",
    "PACKET_MULTICAST",
    "PACKET_OTHERHOST",
    "PACKET_OUTGOING",
    "CaptureGroup",
    "PacketSender",
    "RarpCapture",
    "Sighting",
    "attach_filter",
    "fanout_program",
    "interface_index",
    "interface_is_up",
    "interface_mac",
]

# --- constants (include/uapi/linux/if_ether.h, if_packet.h, asm-generic/socket.h, filter.h) ---

ETH_P_ALL = 0x0003
# The TPID PACKET_AUXDATA implies when it does not say (see _parse_control): a
# kernel ABI default, not a frame layout.
_TPID_DEFAULT = 0x8100

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
# Fanout modes and flags (include/uapi/linux/if_packet.h). CBPF: a classic BPF
# program picks the member socket (Linux 4.2). UNIQUEID (Linux 4.11; a flag in
# the upper byte of the type): the kernel allocates a group id unused in this
# namespace, so two daemons in one namespace never join each other's group.
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000

# sockaddr_ll.sll_pkttype values: PACKET_HOST .. PACKET_OUTGOING, from frames.bpf
# (the capture filter tests the same skb->pkt_type).

# tpacket_auxdata.tp_status bits.
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

_SOL_SOCKET = socket.SOL_SOCKET
_SO_RCVBUF = 8
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec of native longs
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS

_SIOCGIFFLAGS = 0x8913
_SIOCGIFHWADDR = 0x8927
_IFF_UP = 0x1
_ARPHRD_ETHER = 1
_IFNAMSIZ = 16

_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20

DEFAULT_RCVBUF = 8 * 1024 * 1024
DEFAULT_SNAPLEN = 2048
# Capture sockets in the daemon's fanout group: frames of ingress ifindex i go to
# socket i % CAPTURE_SOCKETS. A port that floods fills only its own socket's queue;
# the ports that share that socket with it (1 in 8 of them, the bridge device's
# copies included when their ifindex falls there) are hit, the other 7 in 8 are
# not. More sockets isolate more ports but cost a descriptor, a preallocated batch
# buffer (~0.6 MiB at 256 frames) and a poll slot each; 8 keeps that small.
CAPTURE_SOCKETS = 8

# sockaddr_ll: u16 family, be16 protocol, int ifindex, u16 hatype, u8 pkttype, u8 halen, u8 addr[8]
_SOCKADDR_LL_SIZE = 20
# tpacket_auxdata: u32 status, len, snaplen; u16 mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("@IIIHHHH")
_TIMESPEC = struct.Struct("@ll")
_CMSGHDR = struct.Struct("@Nii")  # size_t cmsg_len; int cmsg_level; int cmsg_type
_CMSG_ALIGN = ctypes.sizeof(ctypes.c_size_t)
# Room for CMSG_SPACE(timespec) + CMSG_SPACE(tpacket_auxdata), with slack.
_CONTROL_SIZE = 128

_libc = ctypes.CDLL(None, use_errno=True)


# --- interfaces ---


def _check_ifname(name: str) -> None:
    if not name or len(name.encode()) >= _IFNAMSIZ or "\0" in name or "/" in name:
        raise InterfaceError(f"no such interface: {name}", name)


def interface_index(name: str) -> int:
    """The ifindex of `name` in the caller's network namespace."""
    _check_ifname(name)
    try:
        return socket.if_nametoindex(name)
    except OSError as exc:
        raise InterfaceError(f"no such interface: {name}", name) from exc


def _ifreq_ioctl(name: str, request: int) -> bytes:
    _check_ifname(name)
    ifreq = struct.pack("16s24x", name.encode())
    # Any socket reaches dev_ioctl() for SIOCGIF*; a UDP socket needs no privilege.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            return fcntl.ioctl(sock.fileno(), request, ifreq)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise InterfaceError(f"no such interface: {name}", name) from exc
            raise


def interface_is_up(name: str) -> bool:
    """IFF_UP (administratively up) from SIOCGIFFLAGS."""
    (flags,) = struct.unpack_from("@H", _ifreq_ioctl(name, _SIOCGIFFLAGS), 16)
    return bool(flags & _IFF_UP)


def interface_mac(name: str) -> bytes:
    """The 6-byte hardware address of an Ethernet interface (SIOCGIFHWADDR)."""
    result = _ifreq_ioctl(name, _SIOCGIFHWADDR)
    (family,) = struct.unpack_from("@H", result, 16)
    if family != _ARPHRD_ETHER:
        raise InterfaceError(f"interface {name} is not an Ethernet interface", name)
    return result[18:24]


# --- low-level socket helpers ---


def _open_packet_socket() -> socket.socket:
    """An AF_PACKET/SOCK_RAW socket with protocol 0.

    With protocol 0, packet_create() (net/packet/af_packet.c) does not register
    a protocol hook, so the socket receives nothing until bind() names a
    protocol: filters and options can be set before any frame is queued.
    """
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise CapabilityError(
                "CAP_NET_RAW", "missing capability CAP_NET_RAW to open a packet socket"
            ) from exc
        raise


def _sockaddr_ll(ifindex: int, protocol: int) -> bytes:
    return (
        struct.pack("@H", socket.AF_PACKET)
        + struct.pack("!H", protocol)
        + struct.pack("@iHBB8s", ifindex, 0, 0, 0, b"")
    )


def _errno_error() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


_libc.bind.restype = ctypes.c_int
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.sendto.restype = ctypes.c_ssize_t
_libc.sendto.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint32,
]
# int recvmmsg(int fd, struct mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *)
_libc.recvmmsg.restype = ctypes.c_int
_libc.recvmmsg.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint,
    ctypes.c_int,
    ctypes.c_void_p,
]


_sendto = _libc.sendto


def _bind_ll(sock: socket.socket, ifindex: int, protocol: int) -> None:
    # socket.bind() would want an interface name and cannot express "every interface".
    addr = _sockaddr_ll(ifindex, protocol)
    if _libc.bind(sock.fileno(), addr, len(addr)) != 0:
        raise _errno_error()


def attach_filter(sock: socket.socket, program: Program) -> None:
    """Attach a classic BPF program (SO_ATTACH_FILTER); the kernel validates and copies it."""
    fprog, buf = _sock_fprog(program)
    sock.setsockopt(_SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    del buf  # only needed until setsockopt returned: sk_attach_filter() copied it


def _sock_fprog(program: Program) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """struct sock_fprog for `program`, and the buffer it points to (keep it alive)."""
    if not 0 < len(program) <= BPF_MAXINSNS:
        raise ValueError(f"a BPF program has 1..{BPF_MAXINSNS} instructions, got {len(program)}")
    # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
    insns = b"".join(
        struct.pack("@HBBI", code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in program
    )
    buf = ctypes.create_string_buffer(insns, len(insns))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    return struct.pack("@HP", len(program), ctypes.addressof(buf)), buf


def fanout_program(members: int) -> Program:
    """The classic BPF program of `CaptureGroup`'s fanout: member = ingress ifindex % members.

    `ld #ifidx` reads skb->dev->ifindex (the device the frame is seen on: the
    port, or the bridge for its local copy). fanout_demux_bpf() reduces the
    result modulo the group size itself; the `mod` keeps the program right on
    its own.
    """
    if members < 1:
        raise ValueError("a fanout group has at least one member")
    return [
        stmt(LD_W_ABS, SKF_AD_OFF + SKF_AD_IFINDEX),  # ld #ifidx
        stmt(MOD_K, members),  # mod #members
        stmt(RET_A, 0),  # ret a
    ]


# --- sender ---


class PacketSender(OwnedSocket):
    """Sends complete Ethernet frames (FCS excluded) through an AF_PACKET/SOCK_RAW socket.

    Bound (`PacketSender("eth0")`): `send(frame)` goes out of that interface.
    Unbound (`PacketSender()`): `send_on(ifindex_or_name, frame)` picks the
    interface per frame, so one socket serves every interface.

    The socket has protocol 0, so it is on no receive list and never queues
    frames. skb->protocol is filled from the frame's own EtherType by
    packet_parse_headers() (net/packet/af_packet.c) when the socket gives none.
    """

    def __init__(self, ifname: str | None = None) -> None:
        self.ifname = ifname
        self.ifindex: int | None = None
        self._addrs: dict[int, bytes] = {}  # ifindex -> sockaddr_ll, built once
        if ifname is not None:
            self.ifindex = interface_index(ifname)
        self._sock = _open_packet_socket()
        try:
            if self.ifindex is not None:
                try:
                    _bind_ll(self._sock, self.ifindex, 0)
                except OSError as exc:
                    raise self._map(exc, ifname or "?") from exc
        except BaseException:
            self._sock.close()
            raise

    @staticmethod
    def _map(exc: OSError, ifname: str) -> BaseException:
        if exc.errno in (errno.ENXIO, errno.ENODEV):
            return InterfaceError(f"interface {ifname} vanished", ifname)
        if exc.errno == errno.ENETDOWN:
            return InterfaceError(f"interface {ifname} is down", ifname)
        return exc

    def send(self, frame: bytes) -> None:
        """Send on the bound interface. InterfaceError if it is down or gone; else OSError."""
        if self.ifindex is None:
            raise ValueError("PacketSender is not bound to an interface: use send_on()")
        try:
            self._sock.send(frame)
        except OSError as exc:
            raise self._map(exc, self.ifname or "?") from exc

    def send_on(self, interface: int | str, frame: bytes) -> None:
        """Send `frame` out of `interface` (ifindex, or name resolved now)."""
        ifindex = interface_index(interface) if isinstance(interface, str) else interface
        addr = self._addrs.get(ifindex)
        if addr is None:
            if len(self._addrs) >= 1024:
                self._addrs.clear()
            addr = self._addrs[ifindex] = _sockaddr_ll(ifindex, 0)
        while _sendto(self._sock.fileno(), frame, len(frame), 0, addr, _SOCKADDR_LL_SIZE) < 0:
            exc = _errno_error()
            if exc.errno != errno.EINTR:  # a signal while waiting for send buffer: retry (PEP 475)
                raise self._map(exc, interface if isinstance(interface, str) else f"#{interface}")


# --- capture ---


# Not frozen: a frozen dataclass pays object.__setattr__ per field on creation
# (0.8 us instead of 0.2 us), twice per RARP in a burst. Treat it as read-only.
@dataclass(slots=True)
class Sighting:
    """One captured frame.

    `data` starts at the destination MAC. A VLAN tag the kernel had already
    moved into skb->vlan_tci is NOT in `data`; it is in `vlan_tci`/`vlan_tpid`
    (None when the frame carried no such tag). `data` may hold an inline tag
    (the inner tag of QinQ, or where the kernel did not untag).
    """

    data: bytes
    ifindex: int
    pkt_type: int
    vlan_tci: int | None
    vlan_tpid: int | None
    timestamp: float  # kernel receive time (SO_TIMESTAMPNS), seconds since the epoch

    @property
    def vid(self) -> int | None:
        return None if self.vlan_tci is None else self.vlan_tci & 0x0FFF


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_MMSG_LEN_AT = _MMsgHdr.msg_len.offset
_MMSG_CONTROLLEN_AT = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_controllen.offset
_U32 = struct.Struct("@I")
_SIZE_T = struct.Struct("@N")
# What the kernel writes with SO_TIMESTAMPNS and PACKET_AUXDATA both on:
# packet_recvmsg() puts the timestamp (sock_recv_cmsgs) first, then the auxdata,
# each cmsg aligned to CMSG_ALIGN. One unpack reads both (see _parse_control).
_TS_CMSG_LEN = _CMSGHDR.size + _TIMESPEC.size
_AUX_CMSG_AT = (_TS_CMSG_LEN + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
_AUX_CMSG_LEN = _CMSGHDR.size + _AUXDATA.size
_USUAL_CONTROL = struct.Struct(
    "@Nii" + _TIMESPEC.format.lstrip("@") + f"{_AUX_CMSG_AT - _TS_CMSG_LEN}x"
    "Nii" + _AUXDATA.format.lstrip("@")
)


class RarpCapture(OwnedSocket):
    """The daemon's RARP capture: one unbound AF_PACKET socket for every interface.

    Set-up order matters: the socket is created with protocol 0 (on no receive
    list), the BPF program and options are applied, and only then bind()
    registers it for ETH_P_ALL, so no unfiltered frame is ever queued.

    ETH_P_ALL, not ETH_P_RARP: the ptype_all taps run in
    __netif_receive_skb_core() (net/core/dev.c) before the device's rx_handler;
    on a bridge port br_handle_frame() consumes the frame, so a socket bound to
    ETH_P_RARP (a ptype_base handler, run after rx_handler) would never see it
    on the port. A frame arriving on a bridge port is therefore seen twice: on
    the port, and again on the bridge device when the bridge delivers it
    locally. The bridge's flooded copies (and anything sent from this host) pass
    the taps as PACKET_OUTGOING from dev_queue_xmit_nit(); the daemon's filter
    (`frames.capture.capture_filter`) drops them.

    Frames are read with recvmmsg(2) (one system call per batch) directly into
    preallocated buffers; the socket is non-blocking: poll `fileno()`.
    """

    def __init__(
        self, program: Program, rcvbuf: int = DEFAULT_RCVBUF, snaplen: int = DEFAULT_SNAPLEN
    ) -> None:
        self._snaplen = snaplen
        self._drops = 0
        self._packets = 0
        self._stats_lock = threading.Lock()
        self._slots = 0
        self._dirty = 0
        self._sock = _open_packet_socket()
        try:
            attach_filter(self._sock, program)
            self._sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self._sock.setsockopt(_SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self._set_rcvbuf(rcvbuf)
            self._sock.setblocking(False)
            _bind_ll(self._sock, 0, ETH_P_ALL)
        except BaseException:
            self._sock.close()
            raise
        self._allocate(256)

    def set_filter(self, program: Program) -> None:
        """Replace the socket filter (SO_ATTACH_FILTER swaps it atomically)."""
        attach_filter(self._sock, program)

    def join_fanout(self, group: int, mode: int) -> int:
        """Join (or create) fanout group `group` with `mode` (type | flags << 8); its id.

        fanout_add() (net/packet/af_packet.c) wants a bound socket: the group
        takes over the socket's protocol hook (ETH_P_ALL, every device), and the
        socket's own filter still runs on each frame the group hands it.
        """
        self._sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (mode << 16) | group)
        # packet_getsockopt(): id | type << 16 | flags << 24
        return int(self._sock.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF

    def set_fanout_program(self, program: Program) -> None:
        """The group's PACKET_FANOUT_CBPF program (PACKET_FANOUT_DATA; one for the group)."""
        fprog, buf = _sock_fprog(program)
        self._sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)
        del buf  # fanout_set_data_cbpf() copied it

    def _set_rcvbuf(self, size: int) -> None:
        # SO_RCVBUFFORCE (CAP_NET_ADMIN) may exceed net.core.rmem_max; SO_RCVBUF is clamped to it.
        try:
            self._sock.setsockopt(_SOL_SOCKET, _SO_RCVBUFFORCE, size)
        except PermissionError:
            self._sock.setsockopt(_SOL_SOCKET, _SO_RCVBUF, size)

    @property
    def receive_buffer(self) -> int:
        """The kernel's receive buffer size (it doubles the requested value for overhead)."""
        return int(self._sock.getsockopt(_SOL_SOCKET, _SO_RCVBUF))

    def _allocate(self, count: int) -> None:
        snap = self._snaplen
        self._data = (ctypes.c_char * (snap * count))()
        self._names = (ctypes.c_char * (_SOCKADDR_LL_SIZE * count))()
        self._control = (ctypes.c_char * (_CONTROL_SIZE * count))()
        self._iovs = (_IoVec * count)()
        self._msgs = (_MMsgHdr * count)()
        data0 = ctypes.addressof(self._data)
        names0 = ctypes.addressof(self._names)
        control0 = ctypes.addressof(self._control)
        for i in range(count):
            self._iovs[i].iov_base = data0 + i * snap
            self._iovs[i].iov_len = snap
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = names0 + i * _SOCKADDR_LL_SIZE
            hdr.msg_namelen = _SOCKADDR_LL_SIZE
            hdr.msg_iov = ctypes.pointer(self._iovs[i])
            hdr.msg_iovlen = 1
            hdr.msg_control = control0 + i * _CONTROL_SIZE
            hdr.msg_controllen = _CONTROL_SIZE
        self._data_view = memoryview(self._data).cast("B")
        self._control_view = memoryview(self._control).cast("B")
        self._msgs_view = memoryview(self._msgs).cast("B")
        # recvmmsg overwrites msg_namelen/msg_controllen/msg_len of the slots it
        # fills: one memmove from this copy restores them.
        self._pristine = bytes(self._msgs_view)
        self._slots = count
        self._dirty = 0

    def recv_batch(self, max_frames: int = 256) -> list[Sighting]:
        """Up to `max_frames` queued frames; [] at once when none are queued."""
        if max_frames <= 0:
            return []
        if max_frames > self._slots:
            self._allocate(max_frames)
        msgs = self._msgs
        if self._dirty:
            # The kernel overwrote the lengths of the slots it filled last time.
            ctypes.memmove(msgs, self._pristine, self._dirty * _MMSG_SIZE)
            self._dirty = 0
        count = _libc.recvmmsg(
            self._sock.fileno(), ctypes.addressof(msgs), max_frames, _MSG_DONTWAIT, None
        )
        if count < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        self._dirty = count
        out: list[Sighting] = []
        append = out.append
        snap = self._snaplen
        names = self._names
        control = self._control_view
        data_view = self._data_view
        mv = self._msgs_view
        u32 = _U32.unpack_from
        size_t = _SIZE_T.unpack_from
        for i in range(count):
            # The mmsghdr fields read from raw memory: a ctypes structure per
            # field access was most of this loop's time.
            base = i * _MMSG_SIZE
            length = min(u32(mv, base + _MMSG_LEN_AT)[0], snap)
            start = i * snap
            data = bytes(data_view[start : start + length])
            ifindex, pkt_type = _unpack_ll(names, i * _SOCKADDR_LL_SIZE)
            tci, tpid, stamp = _parse_control(
                control, i * _CONTROL_SIZE, size_t(mv, base + _MMSG_CONTROLLEN_AT)[0]
            )
            append(Sighting(data, ifindex, pkt_type, tci, tpid, stamp))
        return out

    def drops(self) -> int:
        """Frames the kernel dropped for lack of buffer space since this socket was opened.

        PACKET_STATISTICS resets the kernel's counters on every read
        (packet_getsockopt() zeroes po->stats), so the total is accumulated here.
        """
        return self.statistics()[1]

    def statistics(self) -> tuple[int, int]:
        """(frames that passed the filter, of which dropped) since this socket was opened.

        The kernel's tp_packets counts the dropped frames too (packet_getsockopt()
        adds tp_drops to it). Both reset on every read: accumulated here.
        """
        # Two readers: the metrics endpoint's thread and the daemon's loop (control
        # status, SIGUSR1). Each read resets the kernel's counts, so a read and its
        # addition must not interleave with the other's, or counts are lost.
        with self._stats_lock:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            packets, dropped = struct.unpack("@II", raw)
            self._packets += packets
            self._drops += dropped
            return self._packets, self._drops


class CaptureGroup:
    """The daemon's capture: `members` RarpCaptures in one PACKET_FANOUT_CBPF group.

    Why: one socket has one receive queue. A port flooding RARPs at wire rate
    fills it, and the kernel then drops every port's frames alike
    (packet_rcv(): sk_rmem_alloc >= sk_rcvbuf), before any per-port limit in
    user space can act; a VM's 5-frame announcement from another port could be
    lost whole. The fanout program sends ingress ifindex i to member
    i % members (`fanout_program`), so a flood fills its own member's queue
    only, and the daemon reads each ready member in a bounded batch, so the
    flooded member cannot starve the others in user space either.

    Each member keeps the full configured receive buffer (not a share of it):
    what one member must absorb is a burst from its own ports (a mass
    migration onto one hypervisor port), as large as the single socket had to;
    rcvbuf is a cap on queued memory, not an allocation, and the N-fold worst
    case needs floods in every member's ports at once.

    The group id is allocated by the kernel (PACKET_FANOUT_FLAG_UNIQUEID),
    unique in the network namespace; a kernel without that flag (< 4.11)
    gets one derived from the pid. Requires PACKET_FANOUT_CBPF (Linux 4.2).
    """

    def __init__(
        self,
        program: Program,
        members: int = CAPTURE_SOCKETS,
        rcvbuf: int = DEFAULT_RCVBUF,
        snaplen: int = DEFAULT_SNAPLEN,
    ) -> None:
        if members < 1:
            raise ValueError("a capture group has at least one member")
        self.members: list[RarpCapture] = []
        try:
            for _ in range(members):
                self.members.append(RarpCapture(program, rcvbuf, snaplen))
            first, *rest = self.members
            try:
                self.group = first.join_fanout(0, PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # No UNIQUEID (Linux < 4.11): an id of our own; the pid keeps two
                # daemons in one namespace apart (pids are unique system-wide).
                self.group = first.join_fanout(os.getpid() & 0xFFFF, PACKET_FANOUT_CBPF)
            for member in rest:
                member.join_fanout(self.group, PACKET_FANOUT_CBPF)
            first.set_fanout_program(fanout_program(members))
        except BaseException:
            self.close()
            raise

    def filenos(self) -> list[int]:
        return [m.fileno() for m in self.members]

    def set_filter(self, program: Program) -> None:
        """Replace every member's socket filter (each swap is atomic on its own)."""
        for m in self.members:
            m.set_filter(program)

    @property
    def receive_buffer(self) -> int:
        """One member's receive buffer (each has the same)."""
        return self.members[0].receive_buffer

    def recv_batch(self, max_frames: int = 256) -> list[Sighting]:
        """Up to `max_frames` queued frames from each member, in member order."""
        out: list[Sighting] = []
        for m in self.members:
            out += m.recv_batch(max_frames)
        return out

    def drops(self) -> int:
        """Frames the kernel dropped for lack of buffer space, summed over the members."""
        return sum(m.drops() for m in self.members)

    def statistics(self) -> tuple[int, int]:
        """(frames that passed the filter, of which dropped), summed over the members."""
        stats = [m.statistics() for m in self.members]
        return sum(p for p, _ in stats), sum(d for _, d in stats)

    def close(self) -> None:
        for m in self.members:
            m.close()

    def __enter__(self) -> CaptureGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unpack_ll(names: ctypes.Array[ctypes.c_char], offset: int) -> tuple[int, int]:
    # sockaddr_ll: family(2) protocol(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
    ifindex, _hatype, pkt_type = struct.unpack_from("@iHB", names, offset + 4)
    return ifindex, pkt_type


def _parse_control(
    control: memoryview, offset: int, length: int
) -> tuple[int | None, int | None, float]:
    """(VLAN TCI, TPID, kernel timestamp) from one frame's control messages."""
    if length >= _USUAL_CONTROL.size:
        (ts_len, ts_level, ts_kind, sec, nsec, aux_len, aux_level, aux_kind, status, *aux) = (
            _USUAL_CONTROL.unpack_from(control, offset)
        )
        if (
            ts_len == _TS_CMSG_LEN
            and ts_level == _SOL_SOCKET
            and ts_kind == _SCM_TIMESTAMPNS
            and aux_len == _AUX_CMSG_LEN
            and aux_level == SOL_PACKET
            and aux_kind == PACKET_AUXDATA
        ):
            if not status & TP_STATUS_VLAN_VALID:
                return None, None, sec + nsec / 1e9
            # aux: len, snaplen, mac, net, vlan_tci, vlan_tpid
            tpid = aux[5] if status & TP_STATUS_VLAN_TPID_VALID else _TPID_DEFAULT
            return aux[4], tpid, sec + nsec / 1e9
    return _parse_control_any(control, offset, length)


def _parse_control_any(
    control: memoryview, offset: int, length: int
) -> tuple[int | None, int | None, float]:
    """`_parse_control` for any layout: walk the cmsgs one by one."""
    tci: int | None = None
    tpid: int | None = None
    stamp = math.nan
    pos, end = offset, offset + length
    hdr_len = _CMSGHDR.size
    while pos + hdr_len <= end:
        cmsg_len, level, kind = _CMSGHDR.unpack_from(control, pos)
        if cmsg_len < hdr_len or pos + cmsg_len > end:
            break
        body = pos + hdr_len
        if level == _SOL_SOCKET and kind == _SCM_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(control, body)
            stamp = sec + nsec / 1e9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _len, _snap, _mac, _net, vlan_tci, vlan_tpid = _AUXDATA.unpack_from(
                control, body
            )
            if status & TP_STATUS_VLAN_VALID:
                tci = vlan_tci
                # Before TP_STATUS_VLAN_TPID_VALID existed, the tag was always 802.1Q.
                tpid = vlan_tpid if status & TP_STATUS_VLAN_TPID_VALID else _TPID_DEFAULT
        pos += (cmsg_len + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
    if math.isnan(stamp):
        stamp = time.time()
    return tci, tpid, stamp
