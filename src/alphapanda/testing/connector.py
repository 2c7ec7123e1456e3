"""An in-memory Kite connector: ``ShardConnection`` without a network.

``MemoryConnector`` satisfies ``alphapanda.kite.transport.Connector``; each ``open()``
returns a :class:`MemorySocket` (or raises the next of the failures it was given).
The test puts frames in ``socket.frames``, reads what the client sent from
``socket.sent``, and kills a socket with ``abort()`` — which surfaces on ``recv`` and
``send`` at once, the way a real socket's death reaches a reader and a writer
together. ``live``/``max_live`` count open sockets, so a test can prove there were
never two at a time.
"""

from __future__ import annotations

import asyncio
import json

from alphapanda.kite.transport import ConnectFailed, FrameSocket, SocketClosed

_FRAME_QUEUE = 100


class MemorySocket:
    """One in-memory socket; its death surfaces on ``recv`` and ``send`` at once."""

    def __init__(self, connector: MemoryConnector) -> None:
        self.connector = connector
        self.sent: list[dict[str, object]] = []
        self.closed = asyncio.Event()
        self.frames: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=_FRAME_QUEUE)

    async def recv(self) -> bytes | str:
        get = asyncio.ensure_future(self.frames.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            get.cancel()
            closed.cancel()
        if get in done and not get.cancelled():
            return get.result()
        raise SocketClosed("gone")

    async def send(self, text: str) -> None:
        if self.closed.is_set():
            raise SocketClosed("gone")
        self.sent.append(json.loads(text))
        await asyncio.sleep(0)

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.connector.live -= 1


class MemoryConnector:
    """Opens :class:`MemorySocket` s, after failing with ``failures`` in order."""

    def __init__(self, failures: list[ConnectFailed] | None = None) -> None:
        self.failures = list(failures or [])
        self.live = 0
        self.max_live = 0
        self.opened: list[MemorySocket] = []
        self.tokens: list[str] = []
        self.opened_event = asyncio.Event()

    async def open(self, api_key: str, access_token: str) -> FrameSocket:
        self.tokens.append(access_token)
        await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        socket = MemorySocket(self)
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        self.opened.append(socket)
        self.opened_event.set()
        return socket
