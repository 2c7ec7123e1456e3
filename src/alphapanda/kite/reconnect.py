"""How long to wait before the next connection attempt (pure; clock and RNG passed in).

Ordinary failures back off exponentially with *full jitter* (AWS architecture blog,
"Exponential Backoff and Jitter"): the delay is uniform in ``[0, min(cap, base*2^n)]``,
which spreads the reconnects of many clients instead of synchronising them. The
attempt counter resets only after a connection has stayed up for
``healthy_reset_after`` seconds, so a server that accepts and immediately drops us
keeps us backing off instead of hammering it.

Two failures have their own, slow schedule because retrying fast cannot help:
HTTP 403 (the access token is invalid or expired; only a new token fixes it) and
HTTP 429 (the API key already has its maximum number of connections).
"""

from __future__ import annotations

import random
from typing import Final, Literal, get_args

# Why a connection attempt ended or a live socket was given up. Used as the metric
# label, so keep it a small fixed set.
Reason = Literal[
    "connect_ok",
    "refused",
    "timeout",
    "auth_403",
    "capacity_429",
    "http_error",
    "protocol_error",
    "token_error",
    "auth_required",
    "liveness_timeout",
    "closed_by_server",
    "internal_error",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)


class ReconnectPolicy:
    """Backoff schedule of one connection. Not shared: each shard owns one."""

    def __init__(
        self,
        *,
        base_delay: float,
        max_delay: float,
        healthy_reset_after: float,
        auth_retry_delay: float,
        capacity_retry_delay: float,
        rng: random.Random | None = None,
    ) -> None:
        if base_delay <= 0 or max_delay <= 0:
            raise ValueError("delays must be positive")
        self.base_delay = base_delay
        self.max_delay = max(max_delay, base_delay)
        self.healthy_reset_after = healthy_reset_after
        self.auth_retry_delay = auth_retry_delay
        self.capacity_retry_delay = capacity_retry_delay
        self._rng = rng or random.Random()
        self._failures = 0
        self._connected_at: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive failures since the last healthy period."""
        return self._failures

    def ceiling(self) -> float:
        """The upper bound of the next ordinary delay."""
        # min() before the power would overflow on long outages; cap the exponent.
        return min(self.max_delay, self.base_delay * 2.0 ** min(self._failures, 62))

    def next_delay(self, reason: str = "closed_by_server") -> float:
        """The delay before the next attempt after a failure for ``reason``."""
        if reason == "auth_403":
            return self.auth_retry_delay
        if reason == "capacity_429":
            # A little jitter so that several shards refused together do not return
            # together and get refused together again.
            return self.capacity_retry_delay * self._rng.uniform(1.0, 1.2)
        delay = self._rng.uniform(0.0, self.ceiling())
        self._failures += 1
        return delay

    def connected(self, now: float) -> None:
        """The handshake succeeded at monotonic time ``now``."""
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        """The socket ended at ``now``; forget past failures if it had been healthy."""
        if self._connected_at is not None and now - self._connected_at >= self.healthy_reset_after:
            self._failures = 0
        self._connected_at = None
