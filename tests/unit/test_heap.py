"""The feed keeps freed C heap memory: glibc's trim threshold is raised (Linux)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# In a fresh interpreter (the heap setting is process-wide): optionally keep freed
# memory as the feed does, then build and drop 50 frames' worth of records (3,000
# values of ~1.2 KB each, as a Kite frame of full packets becomes) and print the page
# faults that took: each page the heap had to grow by again after giving it back.
_PROBE = """
import resource, sys
from alphapanda.heap import keep_freed_memory
if sys.argv[1] == "feed":
    assert keep_freed_memory()
def frame():
    return [b"x" * 1200 + bytes([i & 0xFF]) for i in range(3000)]
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    records = frame()
    del records
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(heap: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, heap], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the trim threshold is glibc's",
)
def test_a_frame_of_records_freed_stays_in_the_heap_for_the_next() -> None:
    # glibc's default gives the ~3.6 MB back after every frame (~900 pages a frame).
    default = _page_faults("default")
    assert default > 50 * 500
    assert _page_faults("feed") < default // 20


# In a fresh interpreter (the freeze is process-wide): long-lived objects as a running
# feed has them, then the freeze; prints what a full collection still scans, what is
# frozen, and whether frozen objects are still freed and later cycles still collected.
_FREEZE_PROBE = """
import gc, json, weakref
from alphapanda.heap import freeze_long_lived
class Node:
    pass
universe = [{"token": i, "tags": [i]} for i in range(100_000)]
frozen_but_dropped = Node()
freed = []
weakref.finalize(frozen_but_dropped, freed.append, "by refcount")
gc.collect()
before = len(gc.get_objects())
frozen = freeze_long_lived()
after = len(gc.get_objects())
del frozen_but_dropped
cycle = Node(); cycle.me = cycle
weakref.finalize(cycle, freed.append, "cycle")
del cycle
collected = gc.collect()
print(json.dumps({"before": before, "after": after, "frozen": frozen, "freed": freed}))
"""


def test_start_up_objects_leave_the_collectors_scans_and_are_still_freed() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, check=True
    )
    figures = json.loads(run.stdout)
    assert figures["before"] > 200_000  # 100,000 dicts and their lists
    assert figures["frozen"] >= figures["before"]
    assert figures["after"] < 1_000  # what a full collection scans from now on
    assert figures["freed"] == ["by refcount", "cycle"]
