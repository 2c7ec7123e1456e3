"""The simulator's settings: one frozen object, built by the CLI or a test, passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_WS_PORT = 18765
DEFAULT_ADMIN_PORT = 18766


class SimConfig(BaseModel):
    """How the simulated Kite exchange behaves. Port 0 picks a free port (tests)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_WS_PORT, ge=0, le=65535)
    admin_port: int = Field(DEFAULT_ADMIN_PORT, ge=0, le=65535)
    # The admin API can drop connections and mint tokens: loopback unless asked, and
    # with a bearer token when one is given (Kite's own login routes stay open).
    admin_host: str = "127.0.0.1"
    admin_token: SecretStr | None = None
    # Where /connect/login sends the browser back with a request token.
    redirect_url: str = "http://127.0.0.1:18770/kite/callback"
    instruments: Path = Path("data/instruments.csv")
    ticks_per_second: float = Field(1000.0, ge=0)
    api_key: str = "alphapanda-dev"
    access_token: SecretStr = SecretStr("dev-access-token")
    api_secret: SecretStr = SecretStr("dev-api-secret")
    max_connections: int = Field(3, ge=1)
    max_instruments_per_connection: int = Field(3000, ge=1)
    seed: int = 0
    # ``stream``: ``ticks_per_second`` spread over small frames every ``send_interval``.
    # ``kite``: the real exchange's rhythm, one frame per connection every
    # ``frame_interval`` seconds with a packet for each subscribed instrument that
    # changed (a ``change_ratio`` share of them); there ``ticks_per_second`` only
    # switches the frames on (> 0) or pauses them (0).
    cadence: Literal["stream", "kite"] = "stream"
    frame_interval: float = Field(1.0, gt=0, le=60)
    change_ratio: float = Field(1.0, ge=0, le=1)
    # One binary message per connection per interval carries every packet that fell
    # due: batching is what makes 100k ticks/s reachable from one Python process.
    send_interval: float = Field(0.02, gt=0, le=1.0)
    heartbeat_interval: float = Field(1.0, gt=0)
    # A client that does not read for this long is cut off rather than stalling every
    # other client (the sim has one sender for all connections).
    write_timeout: float = Field(10.0, gt=0)
    # Most packets in one binary message (Kite's frame count is a uint16; this also
    # keeps messages well under the clients' 1 MiB default max message size).
    max_packets_per_message: int = Field(4000, ge=1, le=65535)
    # Benchmarks only (0: off). Once the subscriptions have settled, build this many
    # seconds of ticks ahead of time at ``pregenerate_rate`` (default: the start-up
    # rate) so sending them costs the simulator almost nothing (see sim.pregen).
    pregenerate_seconds: float = Field(0.0, ge=0, le=600)
    pregenerate_rate: float | None = Field(None, gt=0)
    # Most ticks held pre-built at once (~220 bytes each in full mode: 2M ≈ 440 MB).
    pregenerate_limit: int = Field(2_000_000, ge=0)
