"""Type stubs of the Rust extension (native/src): Kite frames to Kafka records."""

from collections.abc import Callable
from typing import Any

API_VERSION: int

class NativeTick:
    """One packet of a frame, its bytes kept; decoded when encoded."""

    @property
    def instrument_token(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def last_price(self) -> float: ...
    @property
    def volume_traded(self) -> int | None: ...
    @property
    def oi(self) -> int | None: ...
    @property
    def exchange_timestamp(self) -> int | None: ...
    @property
    def received_at_ns(self) -> int: ...
    @property
    def packet(self) -> bytes: ...
    def candle_fields(
        self, include_oi: bool
    ) -> tuple[int, float, int | None, int | None, int | None, int]: ...

def decode_frame(
    data: bytes, received_at_ns: int
) -> tuple[list[NativeTick], bool, list[tuple[int, int, str]]]: ...
def encode_ticks(
    ticks: list[NativeTick],
    emitted_at_ns: int,
    *,
    msgpack: bool,
    include_depth: bool,
    include_oi: bool,
    id_mid: str,
    seq: int,
    headers: list[tuple[str, bytes]],
    message_type: type[Any],
    positions: dict[int, tuple[int, int]] | None = None,
    headers_at: Callable[[int], list[tuple[str, bytes]]] | None = None,
    max_positions: int = 0,
) -> tuple[list[Any], int, list[tuple[int, str]]]: ...
def encode_frame(
    data: bytes,
    received_at_ns: int,
    emitted_at_ns: int,
    *,
    msgpack: bool,
    include_depth: bool,
    include_oi: bool,
    id_mid: str,
    seq: int,
    headers: list[tuple[str, bytes]],
    message_type: type[Any],
) -> tuple[list[Any], int, list[tuple[int, str]], bool, list[tuple[int, int, str]]]: ...
