"""Token buckets: pure (the caller passes the clock), so they are tested without time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Rate(NamedTuple):
    """A rate limit: `rate` per second, at most `burst` at once (a bucket's size).

    A tuple, so that `TokenBucket(*rate)` builds its bucket and settings compare
    and print as (rate, burst)."""

    rate: float
    burst: float


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; `take()` spends one if it can."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(self.stamp, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class KeyedBuckets:
    """One bucket per key (a port), created on first use, idle ones forgotten."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[int, TokenBucket] = {}

    def take(self, key: int, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self.forget_idle(now)
            b = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return b.take(now)

    def forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled completely: they carry no state."""
        full = self.burst / self.rate if self.rate > 0 else float("inf")
        for k in [
            k for k, b in self._buckets.items() if b.stamp is not None and now - b.stamp >= full
        ]:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
