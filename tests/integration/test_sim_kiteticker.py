"""The official ``kiteconnect.KiteTicker`` against the simulator, which must speak
Kite's protocol well enough for the official client.

KiteTicker runs on Twisted's reactor, which cannot be restarted in a process, so the
client runs in a subprocess: it connects via its ``root`` parameter, subscribes in full
mode, collects ticks and prints them as JSON. The simulator runs in the test's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from tests.support.sim import default_instruments, running_simulator

CLIENT_SCRIPT = r"""
import json, sys
from kiteconnect import KiteTicker
from twisted.internet import reactor

api_key, access_token, root, wanted = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokens = [int(t) for t in sys.argv[5].split(",")]
ticks, errors, closes = [], [], []
state = {"stopped": False}

def stop():
    # Close the socket cleanly first, then stop the reactor (it cannot be restarted).
    if not state["stopped"]:
        state["stopped"] = True
        kws.close(1000, "done")
        reactor.callLater(0.5, reactor.stop)

def on_connect(ws, response):
    ws.subscribe(tokens)
    ws.set_mode(ws.MODE_FULL, tokens)

def on_ticks(ws, batch):
    ticks.extend(batch)
    counts = [sum(1 for t in ticks if t["instrument_token"] == tok) for tok in tokens]
    if min(counts) >= wanted:
        stop()

def on_error(ws, code, reason):
    errors.append([code, str(reason), state["stopped"], len(ticks)])

def on_close(ws, code, reason):
    closes.append([code, str(reason)])

kws = KiteTicker(api_key, access_token, root=root, reconnect=False)
kws.on_connect, kws.on_ticks, kws.on_error, kws.on_close = on_connect, on_ticks, on_error, on_close
reactor.callLater(30, stop)  # a safety net; normally stopped by on_ticks
kws.connect()  # runs the reactor until stop()
print(json.dumps({"ticks": ticks, "errors": errors, "closes": closes}, default=str))
"""


async def run_kiteticker(
    tmp_path: Path, api_key: str, access_token: str, root: str, tokens: list[int], wanted: int
) -> dict[str, Any]:
    script = tmp_path / "kiteticker_client.py"
    script.write_text(CLIENT_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        api_key,
        access_token,
        root,
        str(wanted),
        ",".join(map(str, tokens)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


def pick_tokens() -> dict[str, int]:
    """One instrument per segment family, including the divisor-sensitive currencies."""
    chosen: dict[str, int] = {}
    for inst in default_instruments():
        chosen.setdefault(inst.segment, inst.instrument_token)
    return {k: chosen[k] for k in ("NSE", "NFO-FUT", "CDS-FUT", "BCD-OPT", "MCX-FUT", "INDICES")}


async def test_official_kiteticker_receives_full_ticks_with_an_unbroken_volume_ledger(
    tmp_path: Path,
) -> None:
    tokens = pick_tokens()
    async with running_simulator(ticks_per_second=600) as sim:
        result = await run_kiteticker(
            tmp_path, sim.api_key, sim.access_token, sim.ws_url, list(tokens.values()), 40
        )
        stats = await sim.stats()
    assert result["errors"] == []
    assert stats["handshakes"]["accepted"] == 1
    by_token: dict[int, list[dict[str, Any]]] = {}
    for tick in result["ticks"]:
        by_token.setdefault(tick["instrument_token"], []).append(tick)
    assert set(by_token) == set(tokens.values())
    instruments = {i.instrument_token: i for i in default_instruments()}
    for segment, token in tokens.items():
        ticks = by_token[token]
        assert len(ticks) >= 40
        full = [t for t in ticks if t["mode"] == "full"]
        # The first few may be quote: Kite subscribes in quote mode until set_mode lands.
        assert len(full) >= 30, segment
        tick_size = instruments[token].tick_size or 0.05
        for tick in ticks:
            steps = tick["last_price"] / tick_size
            assert abs(steps - round(steps)) < 1e-6, (segment, tick["last_price"])
        if segment == "INDICES":
            assert all(not t["tradable"] for t in ticks)
            continue
        assert all(len(t["depth"]["buy"]) == 5 and len(t["depth"]["sell"]) == 5 for t in full)
        for before, after in itertools.pairwise(ticks):
            assert after["volume_traded"] == before["volume_traded"] + after["last_traded_quantity"]
        if segment == "NFO-FUT":
            assert all(t["oi"] > 0 for t in full)
