"""The life cycle of one shard's connection, as a pure state machine.

::

    stopped ──▶ connecting ──▶ connected ──▶ backoff ──▶ connecting ...
                    │                          ▲
                    ├──▶ backoff ──────────────┘
                    └──▶ auth_required ──▶ connecting ...
    (any state) ──▶ stopped

The invariant that matters: ``connecting`` is only reachable from a state without a
socket (``stopped``, ``backoff``, ``auth_required``). A second attempt while one is
in flight, or while a socket is live, is an ``IllegalTransition`` — the connection
task that owns the socket is the only caller, so this is a guard against bugs in that
task, not a lock between competitors (there are none).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

State = Literal["connecting", "connected", "backoff", "auth_required", "stopped"]
STATES: Final[tuple[State, ...]] = (
    "connecting",
    "connected",
    "backoff",
    "auth_required",
    "stopped",
)

_ALLOWED: Final[dict[State, frozenset[State]]] = {
    "stopped": frozenset({"connecting"}),
    "connecting": frozenset({"connected", "backoff", "auth_required", "stopped"}),
    "connected": frozenset({"backoff", "stopped"}),
    "backoff": frozenset({"connecting", "stopped"}),
    "auth_required": frozenset({"connecting", "stopped"}),
}


class IllegalTransition(RuntimeError):
    """A transition the life cycle does not allow (a bug in the caller)."""


class ConnectionStatus(msgspec.Struct, frozen=True):
    """A snapshot of one connection, for ``/status`` and the CLI."""

    shard: int
    state: State
    since: datetime
    reconnect_count: int
    last_disconnect_reason: str | None
    instruments: int
    frames_received: int
    ticks_received: int
    last_frame_age: float | None  # seconds since the last frame; None before the first


class ConnectionStateMachine:
    """Tracks the state, when it was entered, and why the last socket ended."""

    def __init__(self, now: datetime) -> None:
        self.state: State = "stopped"
        self.since = now
        self.reconnect_count = 0
        self.last_disconnect_reason: str | None = None
        self._attempted = False

    def _move(self, target: State, now: datetime) -> None:
        if target not in _ALLOWED[self.state]:
            raise IllegalTransition(f"{self.state} -> {target} is not allowed")
        self.state = target
        self.since = now

    def connecting(self, now: datetime) -> None:
        """An attempt starts; every attempt after the first counts as a reconnect."""
        self._move("connecting", now)
        if self._attempted:
            self.reconnect_count += 1
        self._attempted = True

    def connected(self, now: datetime) -> None:
        self._move("connected", now)

    def failed(self, reason: str, now: datetime, *, auth: bool = False) -> None:
        """The attempt or the live socket ended for ``reason``; wait before retrying."""
        self._move("auth_required" if auth else "backoff", now)
        self.last_disconnect_reason = reason

    def stopped(self, now: datetime, reason: str | None = None) -> None:
        """Idle: told to stop, or no instruments to carry. Allowed from any state."""
        if self.state != "stopped":
            self.state = "stopped"
            self.since = now
        if reason is not None:
            self.last_disconnect_reason = reason
