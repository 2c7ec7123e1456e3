"""Start-up checks of the environment, each failure one short message and exit 2.

A file that is missing, a directory that cannot be created, a port another process
holds: these are set-up mistakes, and the operator needs the name of the setting and
what to do, not a traceback from deep inside a task group. The checks run before
anything starts, so a failure leaves nothing half-started behind.

Relative paths have already been made absolute against ``ALPHAPANDA_HOME`` (or the
working directory) by ``load_settings``; messages quote the absolute path and the base.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from alphapanda.settings import Settings, env_name, path_base

LOCK_NAME = ".lock"


class StartupError(Exception):
    """A set-up problem; the message (one or two lines) names the setting and the fix."""


def _where(settings: Settings) -> str:
    base = path_base(settings)
    source = "ALPHAPANDA_HOME" if settings.home is not None else "the working directory"
    return f"relative paths are resolved against {source}, {base}"


def check_readable_file(path: Path, variable: str, settings: Settings) -> None:
    """``path`` exists, is a file and can be opened for reading."""
    if not path.exists():
        raise StartupError(
            f"{variable}: {path} does not exist ({_where(settings)}); "
            f"set {variable} to the file or set ALPHAPANDA_HOME"
        )
    if not path.is_file():
        raise StartupError(f"{variable}: {path} is not a file; set {variable} to a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise StartupError(
            f"{variable}: cannot read {path} ({exc.strerror}); fix its permissions"
        ) from None


@contextlib.contextmanager
def locked_directory(path: Path, variable: str, settings: Settings) -> Iterator[Path]:
    """Create ``path`` if needed and hold an exclusive lock on it while the context lasts.

    Two feeds spooling into one directory would interleave segments and replay each
    other's ticks; the lock makes the second one refuse to start instead.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"{variable}: cannot create {path} ({exc.strerror}; {_where(settings)}); "
            f"point {variable} at a writable directory"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(
            f"{variable}: {path} is not writable by this user; "
            f"fix its permissions or point {variable} elsewhere"
        )
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StartupError(
            f"{variable}: cannot create {path / LOCK_NAME} ({exc.strerror})"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StartupError(
                    f"{variable}: {path} is locked by another running feed; stop it or give "
                    f"this one its own {variable}"
                ) from None
            raise StartupError(f"{variable}: cannot lock {path} ({exc.strerror})") from None
        yield path
    finally:
        os.close(fd)


def check_port_free(host: str, port: int, variable: str) -> None:
    """Nothing else listens on ``host:port`` (uvicorn would otherwise fail mid-start)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"{variable}: cannot resolve the address {host!r} ({exc.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # The same option uvicorn sets, so a port in TIME_WAIT is not mistaken for taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{variable}: port {port} on {host} is already in use by another process; "
                    f"stop it or choose another port with {variable}"
                ) from None
            raise StartupError(
                f"{variable}: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None


def check_reachable(url: str, variable: str, default_port: int, timeout: float = 3.0) -> None:
    """A TCP connection to the host of ``url`` succeeds (for services a command needs)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(
            f"{variable}: cannot reach {host}:{port} ({reason}); start the service or fix {variable}"
        ) from None


@contextlib.contextmanager
def feed_preflight(settings: Settings, *, api: bool) -> Iterator[None]:
    """Every check ``alphapanda feed`` needs; holds the spool lock while the feed runs."""
    feed = settings.feed
    if feed.instruments_csv is not None:
        check_readable_file(feed.instruments_csv, env_name(("feed", "instruments_csv")), settings)
    if api:
        check_port_free(settings.api.host, settings.api.port, env_name(("api", "port")))
    with locked_directory(feed.spool_dir, env_name(("feed", "spool_dir")), settings):
        yield
