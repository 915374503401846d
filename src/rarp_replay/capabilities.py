"""Linux capabilities of this process, read from /proc (capabilities(7))."""

from __future__ import annotations

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}


def effective() -> int:
    """The effective capability set (CapEff) as a bit mask."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing(*caps: int) -> list[str]:
    eff = effective()
    return [NAMES[c] for c in caps if not eff & (1 << c)]
