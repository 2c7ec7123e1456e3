"""An abusive API client, run as its own process so it shares nothing with the feed:

    python -m tests.support.abuse HOST PORT SECONDS

For SECONDS it keeps up, concurrently: big bodies without a key (50 MB declared, and
chunked bodies streamed until the server cuts them off), slow-drip connections that
send a header byte at a time, and a flood of ~1,000 keyless POSTs per second. It
prints one JSON line of what it did and what status codes it got.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter

BIG = 50 * 1024 * 1024
CHUNK = b"x" * 65536


async def _status(reader: asyncio.StreamReader) -> str:
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    except (TimeoutError, ConnectionError):
        return "timeout"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


async def big_declared(host: str, port: int, until: float, seen: Counter[str]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            head = (
                f"POST /subscriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {BIG}\r\n\r\n"
            )
            writer.write(head.encode())
            sent = 0
            # Push body until the server answers or closes (it must not wait for 50 MB).
            while sent < BIG and not reader.at_eof():
                writer.write(CHUNK)
                sent += len(CHUNK)
                await writer.drain()
                if sent >= 4 * len(CHUNK):
                    break
            seen[await _status(reader)] += 1
            writer.close()
        except ConnectionError:
            seen["reset"] += 1


async def big_chunked(host: str, port: int, until: float, seen: Counter[str]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"DELETE /subscriptions HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(64):
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
            seen[await _status(reader)] += 1
            writer.close()
        except ConnectionError:
            seen["reset"] += 1


async def slow_drip(host: str, port: int, until: float, seen: Counter[str]) -> None:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionError:
        seen["drip-refused"] += 1
        return
    request = b"POST /subscriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
    try:
        for byte in request:
            if time.monotonic() >= until:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        seen["drip"] += 1
    except ConnectionError:
        seen["drip-cut"] += 1
    finally:
        writer.close()


async def flood(host: str, port: int, until: float, seen: Counter[str], rate: float) -> None:
    body = b'{"tokens": [1], "mode": "ltp"}'
    request = (
        b"POST /subscriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    interval = 1.0 / rate
    next_at = time.monotonic()
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            while time.monotonic() < until:
                writer.write(request)
                await writer.drain()
                status = await _status(reader)
                seen[status] += 1
                # Skip the rest of the response: headers then the small JSON body.
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if line == b"":
                    break
                await reader.readexactly(length)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            seen["reset"] += 1


async def main(host: str, port: int, seconds: float) -> None:
    until = time.monotonic() + seconds
    seen: Counter[str] = Counter()
    # ABUSE_KINDS narrows it down when looking for what costs the feed.
    kinds = set(os.environ.get("ABUSE_KINDS", "declared,chunked,drip,flood").split(","))
    async with asyncio.TaskGroup() as tg:
        for _ in range(4):
            if "declared" in kinds:
                tg.create_task(big_declared(host, port, until, seen))
            if "chunked" in kinds:
                tg.create_task(big_chunked(host, port, until, seen))
        for _ in range(20 if "drip" in kinds else 0):
            tg.create_task(slow_drip(host, port, until, seen))
        # 1,000 requests/s over 4 connections.
        for _ in range(4 if "flood" in kinds else 0):
            tg.create_task(flood(host, port, until, seen, 250.0))
    print(json.dumps({"seconds": seconds, "responses": dict(seen)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
