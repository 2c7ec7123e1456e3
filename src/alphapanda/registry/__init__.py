"""The instrument registry: instruments and the streaming set in PostgreSQL."""

from alphapanda.registry.service import (
    InstrumentRegistryService,
    LoadReport,
    RegistryUnavailable,
    StreamingInstrument,
)

__all__ = [
    "InstrumentRegistryService",
    "LoadReport",
    "RegistryUnavailable",
    "StreamingInstrument",
]
