"""The project's typed errors: every error the package raises on purpose is here.

Parsers raise only `FrameError` subclasses on bad input (never a leaked
`IndexError` or `struct.error`), so callers can count and log a drop. The
netlink codec raises `NetlinkError` both ways: a message it cannot decode, a
record or request it cannot encode.
"""

from __future__ import annotations


class RarpReplayError(Exception):
    """Base class of every error this package raises on purpose."""


class FrameError(RarpReplayError, ValueError):
    """A frame or packet could not be parsed or built."""


class TruncatedFrameError(FrameError):
    """The input ended before the structure it claims to hold."""


class InvalidFrameError(FrameError):
    """The input is long enough but inconsistent (bad length field, version, checksum...)."""


class ChecksumError(InvalidFrameError):
    """A checksum did not verify."""


class AddressError(RarpReplayError, ValueError):
    """A MAC or IP address given by a user is invalid for the purpose."""


class ConfigError(RarpReplayError, ValueError):
    """A setting is missing, unknown or malformed; the message names it.

    A ValueError too, as the value checks it wraps are (config.Kind)."""


class NetlinkError(RarpReplayError):
    """A netlink request failed, or a netlink message could not be decoded or encoded."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class NetlinkOverrunError(NetlinkError):
    """The kernel dropped notifications (ENOBUFS): the mirror must re-dump."""


class CapabilityError(RarpReplayError):
    """The process lacks a Linux capability the operation needs (e.g. CAP_NET_RAW)."""

    def __init__(self, capability: str, message: str | None = None) -> None:
        super().__init__(message or f"missing capability {capability}")
        self.capability = capability


class PrivilegeDropError(RarpReplayError):
    """Dropping capabilities failed, or the result was not what was asked for."""


class NetnsError(RarpReplayError):
    """The network namespace asked for does not exist or cannot be entered."""


class NetnsNotFoundError(NetnsError):
    """No /run/netns/NAME (or no such path): the namespace is not there (yet).

    A distinct class so the command line can give it a distinct exit code: a
    unit can then refuse to restart on it (see cli/rarp_reply.EXIT_NO_NETNS).
    """


class InterfaceError(RarpReplayError):
    """A network interface is missing, down, or vanished while in use."""

    def __init__(self, message: str, ifname: str | None = None) -> None:
        super().__init__(message)
        self.ifname = ifname
