"""``alphapanda bench decode`` as an operator runs it (a real subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_bench_decode_prints_both_decoders_and_the_ratio() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alphapanda",
            "bench",
            "decode",
            "--packets",
            "600",
            "--repeat",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        cells[0]: cells[1:]
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.split("│") if c.strip()]) == 3
    }
    number = re.compile(r"^[\d,]+$")
    for decoder in ("alphapanda decode_message", "kiteconnect _parse_binary"):
        best, median = rows[decoder]
        assert number.match(best), result.stdout
        assert int(best.replace(",", "")) > 0
        assert number.match(median), result.stdout
    assert re.match(r"^\d+\.\d×$", rows["ratio"][0]), result.stdout
    assert "600 full packets in 12 messages" in result.stdout


def test_bench_decode_rejects_nonsense_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alphapanda", "bench", "decode", "--packets", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
