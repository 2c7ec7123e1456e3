"""The feed process's memory: the C heap keeps freed memory for the next frame, and the
cyclic garbage collector leaves the start-up objects alone.

A Kite frame of 3,000 full packets becomes ~3.6 MB of records at once (each a ~1.2 KB
``bytes``, allocated by the C library's ``malloc``), freed again once acked. glibc's
default gives free memory at the top of the heap back to the system as soon as more
than 128 KiB of it is free, so the heap shrank after every frame and grew again at the
next, and every page it grew by cost a page fault and a zeroed page. Measured on the
native encoder (``docs/benchmarks.md``, "Decode"): a fifth of its CPU time went to the
kernel that way. Keeping up to ``TRIM_THRESHOLD_BYTES`` free costs at most that much
resident memory above the feed's working set, and the resident size stays flat.

Python's cyclic collector, for its part, scanned every long-lived object at each full
collection: ~140,000 of them once the feed runs (modules, the instrument universe, the
parts), 65-100 ms with the interpreter lock held, at moments set by allocation counts,
so now and then in the middle of a frame. Once the feed is up, the objects alive then
are moved out of its reach (``gc.freeze``); a full collection then scans only what came
later (a few thousand objects, ~3 ms). Frozen objects are still freed when their last
reference goes; only a reference cycle among them would stay, which start-up objects
(kept for the life of the process) do not form.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
from typing import Final

log = logging.getLogger(__name__)

# glibc's mallopt() parameter number for the trim threshold (malloc.h: M_TRIM_THRESHOLD).
_M_TRIM_THRESHOLD: Final = -1
#: Free memory kept at the top of the heap before it is returned to the system.
TRIM_THRESHOLD_BYTES: Final = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise the C heap's trim threshold (glibc); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    applied = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    log.debug("C heap trim threshold %d bytes: %s", TRIM_THRESHOLD_BYTES, applied)
    return applied


def freeze_long_lived() -> int:
    """Collect garbage, then move every object alive now out of the cyclic collector's
    scans (see the module docstring); returns how many are frozen. Once per process,
    after start-up."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("%d start-up objects moved out of the garbage collector's scans", frozen)
    return frozen
