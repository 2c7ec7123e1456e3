"""Type stubs of the Rust extension (native/src): Kite frames to Kafka records."""

from collections.abc import Callable
from os import PathLike
from pathlib import Path
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

class WalWriter:
    """The WAL's writer thread, native: it never takes the interpreter lock."""

    def __init__(self, fsync_ms: int) -> None: ...
    def start(self) -> None: ...
    def append(self, received_at_ns: int, shard: int, frame: bytes) -> None: ...
    def rotate(self, path: PathLike[str] | str) -> None: ...
    def delete(
        self, paths: list[Path], watermark: PathLike[str] | str, watermark_ns: int
    ) -> None: ...
    def close(self) -> None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def written_frames(self) -> int: ...
    @property
    def written_bytes(self) -> int: ...
    @property
    def discarded_frames(self) -> int: ...
    @property
    def fsyncs(self) -> int: ...
    @property
    def durable_ns(self) -> int: ...
    @property
    def deleted_segments(self) -> int: ...
    @property
    def delete_failures(self) -> int: ...
    @property
    def taken_bytes(self) -> int: ...
