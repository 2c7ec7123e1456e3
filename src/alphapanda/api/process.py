"""The control API in a child process of the feed, so no client can cost the tick path.

On a thread of the feed process the API still shared the interpreter lock with the
socket readers: floods of requests and streamed bodies cost the feed's loop wake-up
lag. Here the HTTP server (parsing, API-key check, body limit, connection cap, rate
limiting, every route) runs in an interpreter of its own; the feed only answers the
``FeedControl`` calls of validated requests, at most ``bridge.CHANNELS`` at a time
(``alphapanda.api.bridge``).

``ApiProcess`` (feed side) starts a Python running ``main`` below, hands it its settings
over its stdin, and supervises it:

* the child prints ``ready`` once it listens; if it cannot (port taken) it prints
  ``startup-error …`` and exits, and the first start raises ``ApiStartupError``;
* a child that dies later is logged and started again after a pause (doubling up to
  ``MAX_RESTART_DELAY`` while new ones die before serving), unless the feed is
  stopping; the ``api_process_restarts_total`` and ``api_process_up`` samples show it;
* ``stop()`` closes the child's stdin: it stops serving gracefully and exits; it is
  killed if it has not exited ``STOP_TIMEOUT`` seconds later, and at once if it does
  not serve yet (still starting).

The child never outlives the feed: the end of its stdin (the feed's ``stop()``, or the
feed's death, even by SIGKILL, closes the pipe) stops it, and the kernel kills it if
its parent dies first (``PR_SET_PDEATHSIG``). It ignores SIGINT and SIGTERM: a Ctrl-C
in a terminal, or a service manager signalling the whole group, reaches it too, and the
feed must keep its API up while it drains; the feed decides when the API stops. Once
it listens it runs ``NICENESS`` steps below the feed in the CPU scheduler, so that a
flood that saturates the CPU slows the API, not the tick path (it starts at the feed's
priority, so that it comes up promptly on a busy machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from alphapanda.api import bridge
from alphapanda.api.control import FeedControl
from alphapanda.api.quotes import quote_book
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
MAX_RESTART_DELAY = 30.0
# Exit code of a child that could not start serving (port taken, bad address).
EXIT_STARTUP = 3
# How much lower than the feed the API process runs in the CPU scheduler.
NICENESS = 10
# prctl(2): the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1

# Not ``-m alphapanda.api.process``: run as __main__, the module's classes would not be
# the ones the pickled config names.
_CHILD_MAIN = "from alphapanda.api.process import main; main()"


@dataclass(frozen=True)
class ChildConfig:
    """What the child needs; pickled over its stdin (a pipe only the feed holds)."""

    settings: Settings
    channel_fds: tuple[int, ...]
    feed_pid: int
    quotes: bool  # the feed keeps latest quotes (derived streams on)


@dataclass
class _Run:
    """What one child's run ended with."""

    code: int | None = None
    ready: bool = False
    message: str = ""


class ApiProcess:
    """Runs and supervises the API child process (a ``BackgroundService``, and the
    metrics source of its restarts and of the calls it made)."""

    def __init__(
        self,
        settings: Settings,
        control: FeedControl,
        *,
        feed_stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._settings = settings
        self._control = control
        self._feed_stopping = feed_stopping
        self._stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        # Control calls the feed answered, by name: the only work the API costs it.
        self.calls: Counter[str] = Counter()
        self.up = False
        self.pid: int | None = None

    def samples(self) -> Iterator[Sample]:
        yield catalog.API_PROCESS_UP.sample(int(self.up))
        yield catalog.API_PROCESS_RESTARTS.sample(self.restarts)
        for name, n in sorted(self.calls.items()):
            yield catalog.API_CONTROL_CALLS.sample(n, (("call", name),))

    def _done(self) -> bool:
        return self._stopping or self._feed_stopping()

    async def run(self) -> None:
        delay = 1.0
        served = False
        while not self._done():
            run = await self._run_child()
            if self._done():
                return
            if not served and not run.ready:
                from alphapanda.api.server import ApiStartupError

                raise ApiStartupError(
                    run.message or f"the API process exited with code {run.code} before serving"
                )
            served = True
            delay = 1.0 if run.ready else min(delay * 2, MAX_RESTART_DELAY)
            self.restarts += 1
            log.error("the API process exited (code %s); restarting it in %.0f s", run.code, delay)
            await asyncio.sleep(delay)

    async def _run_child(self) -> _Run:
        pairs = [socket.socketpair() for _ in range(bridge.CHANNELS)]
        ours = [a for a, _ in pairs]
        theirs = [b for _, b in pairs]
        fds = tuple(sock.fileno() for sock in theirs)  # the same numbers in the child
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CHILD_MAIN,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                pass_fds=fds,
            )
        except BaseException:
            for sock in ours:
                sock.close()
            raise
        finally:
            for sock in theirs:
                sock.close()
        self._proc, self.pid = proc, proc.pid
        try:
            async with asyncio.TaskGroup() as tg:
                channels = [
                    tg.create_task(bridge.serve_channel(self._control, sock, self.calls))
                    for sock in ours
                ]
                await self._configure(proc, fds)
                run = await self._watch(proc)
                # The child's ends closed as it exited; a channel still answering ends now.
                for task in channels:
                    task.cancel()
            return run
        finally:
            await self._end(proc)
            self.up = False
            self._proc = None

    async def _configure(self, proc: asyncio.subprocess.Process, fds: tuple[int, ...]) -> None:
        """Hand the child its settings (or stop it, if the feed stopped meanwhile)."""
        assert proc.stdin is not None
        serves_quotes = quote_book(self._control) is not None
        config = ChildConfig(self._settings, fds, os.getpid(), serves_quotes)
        payload = pickle.dumps(config)
        proc.stdin.write(bridge.LENGTH.pack(len(payload)) + payload)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        if self._stopping:
            self._stop_child(proc)

    async def _watch(self, proc: asyncio.subprocess.Process) -> _Run:
        """Follow what the child says until it exits."""
        assert proc.stdout is not None
        run = _Run()
        while raw := await proc.stdout.readline():
            line = raw.decode(errors="replace").strip()
            if line == "ready":
                run.ready = self.up = True
                # uvicorn's own "Started server process [pid]" says it at INFO.
                log.debug("API process %d serving", proc.pid)
            elif line.startswith("startup-error "):
                run.message = line.removeprefix("startup-error ")
        run.code = await proc.wait()
        self.up = False
        return run

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        """Stop the child, kill it if it does not exit in time."""
        if proc.returncode is not None:
            return
        self._stop_child(proc)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            log.error("the API process did not stop in %.0f s; killing it", STOP_TIMEOUT)
            proc.kill()
            await proc.wait()

    def stop(self) -> None:
        self._stopping = True
        if self._proc is not None:
            self._stop_child(self._proc)

    def _stop_child(self, proc: asyncio.subprocess.Process) -> None:
        # A child still starting serves no one: it is killed rather than left to finish
        # importing before it can see its stdin end (the feed's exit would wait for it).
        if not self.up:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        elif proc.stdin is not None:
            proc.stdin.close()


# --- the child -----------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies; exit now if it already
    has (this process was then adopted by another)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _read_config() -> ChildConfig:
    stdin = sys.stdin.buffer
    (length,) = bridge.LENGTH.unpack(stdin.read(bridge.LENGTH.size))
    config = pickle.loads(stdin.read(length))  # written by our own parent, over a pipe
    assert isinstance(config, ChildConfig)
    return config


async def _until_stdin_ends(stop: asyncio.Event) -> None:
    # The feed holds the other end of our stdin: its stop() or its death ends it.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


def _say(line: str) -> None:
    print(line, flush=True)


def _serving() -> None:
    # Below the feed in the CPU scheduler from now on: when the machine is short of CPU
    # (a flood of requests is exactly that), the kernel serves the tick path first. Not
    # before: on a busy machine a niced start-up could take minutes.
    os.nice(NICENESS)
    _say("ready")


async def _child(config: ChildConfig) -> int:
    from alphapanda.api.server import ApiStartupError, serve_api

    stop = asyncio.Event()
    control = bridge.RemoteControl(
        [socket.socket(fileno=fd) for fd in config.channel_fds], quotes=config.quotes
    )
    try:
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(_until_stdin_ends(stop))
            try:
                await serve_api(
                    config.settings,
                    control,
                    stop=stop,
                    on_started=_serving,
                    process_of=config.feed_pid,
                )
            finally:
                watcher.cancel()
    except* ApiStartupError as group:
        _say(f"startup-error {group.exceptions[0]}")
        failed = True
    else:
        failed = False
    return EXIT_STARTUP if failed else 0


def main() -> None:
    """The API process: serve until the feed closes our stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = _read_config()
    _die_with(config.feed_pid)
    from alphapanda.logs import configure_logging, flush_suppressed, secrets_of

    handler = configure_logging(config.settings.log, secrets=secrets_of(config.settings))
    try:
        code = asyncio.run(_child(config))
    finally:
        flush_suppressed(handler)
    sys.exit(code)
