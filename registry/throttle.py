"""A throttle of failed sign-ins per client address (bearer tokens, the console's sign-in).

Each address has a bucket of `burst` failures that refills at `burst` per `window_s`; when it
is empty, the address is throttled until a failure's worth has refilled (what a throttled
address is answered, a valid token passing, is `registry.api.auth.sign_in`'s rule). Memory is
bounded: at most `max_keys` addresses are tracked, the least recently seen forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class FailureThrottle:
    """Count failures per key (a client address) and say how long a throttled key must wait."""

    def __init__(
        self,
        burst: int = 10,
        window_s: float = 60.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or window_s <= 0:
            raise ValueError("burst must be >= 1 and window_s > 0")
        self._burst = float(burst)
        self._rate = burst / window_s  # failures refilled per second
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._burst
        tokens, stamp = entry
        return min(self._burst, tokens + (now - stamp) * self._rate)

    def retry_after(self, key: str) -> int | None:
        """Seconds `key` must wait before its next sign-in attempt, or None when it may try."""
        tokens = self._tokens(key, self._clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def failed(self, key: str) -> None:
        """Record one failed sign-in of `key`."""
        now = self._clock()
        tokens = self._tokens(key, now) - 1.0
        self._buckets[key] = (max(tokens, -self._burst), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def tracked(self) -> int:
        """How many keys are remembered (bounded by `max_keys`)."""
        return len(self._buckets)
