"""Which instrument rides on which WebSocket connection (pure, no I/O).

Kite allows a few connections per API key, each carrying a bounded number of
instruments. ``ShardPlanner`` keeps the current placement and turns a new desired set
(token -> mode) into a new placement with as little movement as possible:

* an instrument already placed stays on its shard (moving it would cost an
  unsubscribe plus a subscribe and a gap in its stream);
* removed instruments simply leave their shard;
* new instruments go to the least-loaded shard among the ones the set needs, so
  10 instruments use one connection and 7,000 use three balanced ones.

The planner never talks to a socket: each shard's connection diffs its own desired
set against what it has sent on the live socket (see ``subscription_delta``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import msgspec

from alphapanda.modes import MODES


class CapacityError(ValueError):
    """The desired set does not fit in the connections the API key allows."""


class SubscriptionDelta(msgspec.Struct, frozen=True):
    """What must be sent on one live socket to move it from ``sent`` to ``desired``.

    ``subscribe`` holds new tokens; their modes are in ``modes`` together with tokens
    whose mode changed (Kite subscribes in quote mode, so new tokens need a mode
    message too). ``modes`` maps mode -> tokens, ready for one message per mode.
    """

    subscribe: tuple[int, ...] = ()
    unsubscribe: tuple[int, ...] = ()
    modes: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.subscribe or self.unsubscribe or self.modes)


def subscription_delta(sent: Mapping[int, str], desired: Mapping[int, str]) -> SubscriptionDelta:
    """The messages that turn the server's view ``sent`` into ``desired`` (sorted, stable)."""
    subscribe = sorted(token for token in desired if token not in sent)
    unsubscribe = sorted(token for token in sent if token not in desired)
    by_mode: dict[str, list[int]] = {}
    for token in subscribe:
        by_mode.setdefault(desired[token], []).append(token)
    for token, mode in desired.items():
        if token in sent and sent[token] != mode:
            by_mode.setdefault(mode, []).append(token)
    modes = {mode: tuple(sorted(tokens)) for mode, tokens in sorted(by_mode.items())}
    return SubscriptionDelta(tuple(subscribe), tuple(unsubscribe), modes)


def chunked(tokens: Iterable[int], size: int) -> list[list[int]]:
    """Split ``tokens`` into lists of at most ``size`` (Kite accepts bounded messages)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    items = list(tokens)
    return [items[i : i + size] for i in range(0, len(items), size)]


def validate_modes(desired: Mapping[int, str]) -> None:
    """Raise ``ValueError`` naming the first token with an unknown mode."""
    for token, mode in desired.items():
        if mode not in MODES:
            raise ValueError(f"instrument {token}: unknown mode {mode!r} (use ltp, quote or full)")


class ShardPlanner:
    """Places instruments on at most ``max_shards`` shards of ``per_shard`` each."""

    def __init__(self, max_shards: int, per_shard: int) -> None:
        if max_shards < 1 or per_shard < 1:
            raise ValueError("max_shards and per_shard must be >= 1")
        self.max_shards = max_shards
        self.per_shard = per_shard
        self._shards: list[dict[int, str]] = [{} for _ in range(max_shards)]

    @property
    def capacity(self) -> int:
        return self.max_shards * self.per_shard

    def shard(self, index: int) -> dict[int, str]:
        """A copy of shard ``index``'s instruments (token -> mode)."""
        return dict(self._shards[index])

    def shards(self) -> list[dict[int, str]]:
        """Copies of every shard, index = shard id; unused shards are empty."""
        return [dict(shard) for shard in self._shards]

    def current(self) -> dict[int, str]:
        """Everything placed, across shards."""
        merged: dict[int, str] = {}
        for shard in self._shards:
            merged.update(shard)
        return merged

    def check_capacity(self, count: int) -> None:
        if count > self.capacity:
            raise CapacityError(
                f"{count} instruments requested but the API key allows at most "
                f"{self.capacity} ({self.max_shards} connections x {self.per_shard} "
                f"instruments each); {count - self.capacity} too many"
            )

    def assign(self, desired: Mapping[int, str]) -> list[int]:
        """Make the placement match ``desired``; return the ids of shards that changed.

        Raises ``CapacityError`` (placement unchanged) when the set cannot fit, and
        ``ValueError`` on an unknown mode.
        """
        validate_modes(desired)
        self.check_capacity(len(desired))
        changed: set[int] = set()
        for index, shard in enumerate(self._shards):
            for token in [t for t in shard if t not in desired]:
                del shard[token]
                changed.add(index)
            for token, mode in shard.items():
                if desired[token] != mode:
                    shard[token] = desired[token]
                    changed.add(index)

        placed = {token for shard in self._shards for token in shard}
        new_tokens = sorted(token for token in desired if token not in placed)
        if new_tokens:
            candidates = self._candidates(len(desired))
            for token in new_tokens:
                # Least-loaded shard with room; ties go to the lowest id so that
                # placement is deterministic.
                index = min(
                    (i for i in candidates if len(self._shards[i]) < self.per_shard),
                    key=lambda i: (len(self._shards[i]), i),
                )
                self._shards[index][token] = desired[token]
                changed.add(index)
        return sorted(changed)

    def _candidates(self, total: int) -> list[int]:
        # Shards already carrying instruments, plus empty ones until there are enough
        # to hold ``total``: only as many connections as the set needs get opened.
        needed = max(1, math.ceil(total / self.per_shard))
        candidates = [i for i, shard in enumerate(self._shards) if shard]
        for i, shard in enumerate(self._shards):
            if len(candidates) >= needed:
                break
            if not shard:
                candidates.append(i)
        return sorted(candidates)
