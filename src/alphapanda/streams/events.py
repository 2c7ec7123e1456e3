"""Feed events from snapshots of the feed's state: a pure differ.

The shell samples the connections, the subscriptions and the publisher's spooling
flag every ~100 ms and hands them to ``FeedEventTracker.observe()``, which compares
them with the previous sample and says what happened. Sampling instead of hooking
every state change keeps the tick path and the connection code untouched; a socket
that dropped and came back between two samples is still seen, through its reconnect
count.

A ``gap`` is the interval in which a shard's instruments could not have been
received: from its last frame before the drop to the moment it was connected again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from alphapanda.streams.records import (
    AUTH_REQUIRED,
    AUTH_RESTORED,
    CONNECTION_DOWN,
    CONNECTION_UP,
    GAP,
    SPOOLING_STARTED,
    SPOOLING_STOPPED,
    SUBSCRIPTIONS_CHANGED,
    FeedEvent,
)


@dataclass(frozen=True)
class ShardSnapshot:
    """What the tracker needs of one shard (from ``ConnectionStatus`` + its tokens)."""

    shard: int
    state: str
    since: datetime
    reconnect_count: int
    last_disconnect_reason: str | None
    last_frame_age: float | None
    instruments: tuple[int, ...]


@dataclass
class _ShardMemory:
    connected: bool
    reconnect_count: int
    auth_required: bool
    last_frame_at: datetime | None
    instruments: tuple[int, ...]
    down_since: datetime | None  # start of the open gap


class FeedEventTracker:
    """Turns successive snapshots into feed events."""

    def __init__(self) -> None:
        self._shards: dict[int, _ShardMemory] = {}
        self._subscriptions: dict[int, str] | None = None
        self._spooling = False

    def observe(
        self,
        now: datetime,
        shards: Sequence[ShardSnapshot],
        subscriptions: Mapping[int, str],
        spooling: bool,
    ) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        for snap in shards:
            events.extend(self._shard(now, snap))
        # A shard no longer listed carries nothing and holds no socket: stopped.
        listed = {snap.shard for snap in shards}
        for shard, memory in self._shards.items():
            if shard not in listed and memory.connected:
                gone = ShardSnapshot(shard, "stopped", now, memory.reconnect_count, None, None, ())
                events.extend(self._shard(now, gone))
        if self._subscriptions is not None and subscriptions != self._subscriptions:
            old = self._subscriptions
            added = sorted(t for t, m in subscriptions.items() if old.get(t) != m)
            removed = sorted(t for t in old if t not in subscriptions)
            events.append(FeedEvent(SUBSCRIPTIONS_CHANGED, now, instruments=added, removed=removed))
        self._subscriptions = dict(subscriptions)
        if spooling != self._spooling:
            events.append(FeedEvent(SPOOLING_STARTED if spooling else SPOOLING_STOPPED, now))
            self._spooling = spooling
        return events

    def _shard(self, now: datetime, snap: ShardSnapshot) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        connected = snap.state == "connected"
        auth = snap.state == "auth_required"
        frame_at = (
            now - timedelta(seconds=snap.last_frame_age)
            if snap.last_frame_age is not None
            else None
        )
        memory = self._shards.get(snap.shard)
        if memory is None:
            memory = self._shards[snap.shard] = _ShardMemory(
                False, snap.reconnect_count, False, None, snap.instruments, None
            )
            if not connected:
                memory.reconnect_count = snap.reconnect_count
        shard = snap.shard
        tokens = list(snap.instruments or memory.instruments)
        bounced = connected and memory.connected and snap.reconnect_count != memory.reconnect_count
        if memory.connected and (not connected or bounced):
            # Down (possibly up again already, between two samples).
            memory.down_since = memory.last_frame_at or snap.since
            events.append(
                FeedEvent(
                    CONNECTION_DOWN,
                    now if not bounced else snap.since,
                    shard=shard,
                    # A socket closed on purpose (shutdown, nothing to carry) says so,
                    # rather than repeating the previous failure's reason.
                    reason="stopped" if snap.state == "stopped" else snap.last_disconnect_reason,
                    instruments=list(memory.instruments),
                )
            )
            memory.connected = False
        if auth and not memory.auth_required:
            events.append(
                FeedEvent(AUTH_REQUIRED, now, shard=shard, reason=snap.last_disconnect_reason)
            )
        if connected and not memory.connected:
            events.append(FeedEvent(CONNECTION_UP, snap.since, shard=shard, instruments=tokens))
            if memory.auth_required:
                events.append(FeedEvent(AUTH_RESTORED, snap.since, shard=shard))
            if memory.down_since is not None:
                events.append(
                    FeedEvent(
                        GAP,
                        snap.since,
                        shard=shard,
                        instruments=sorted(set(memory.instruments) | set(tokens)),
                        start=memory.down_since,
                        end=snap.since,
                    )
                )
                memory.down_since = None
        if auth:
            memory.auth_required = True
        elif connected:
            memory.auth_required = False
        memory.connected = connected
        memory.reconnect_count = snap.reconnect_count
        if connected and frame_at is not None:
            memory.last_frame_at = frame_at
        if snap.instruments:
            memory.instruments = snap.instruments
        return events
