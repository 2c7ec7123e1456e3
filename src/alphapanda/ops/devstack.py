"""Private Kafka/Redis/PostgreSQL instances for benchmarks and tests.

Started by ``scripts/devstack.sh`` in their own folder and on free ports, so a chaos run
or a test may SIGKILL, SIGSTOP or stop them without disturbing the shared local stack.
Blocking methods: call them through ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

DEVSTACK: Final = Path(__file__).resolve().parents[3] / "scripts" / "devstack.sh"


# Ports below the kernel's range for outgoing connections are tried in this window.
_BELOW_EPHEMERAL: Final = 12_000
# Ports this process has handed out: a service asks for several (Kafka's listeners)
# before any of them is bound, so a free port is never handed out twice.
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port nobody listens on right now, below the kernel's range for outgoing
    connections. A private service is stopped and started again on its port (chaos
    runs, tests killing their broker); a port from that range can be taken meanwhile by
    any outgoing connection, even by a client retrying the stopped service itself (TCP's
    self-connect), and the restart then fails with the port in use."""
    high = _ephemeral_start()
    low = max(1024, high - _BELOW_EPHEMERAL)
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # all taken: any free port, as the kernel picks one
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevstackService:
    """One private kafka, redis or postgres (see the module docstring)."""

    def __init__(
        self, name: str, workdir: Path, script: Path = DEVSTACK, *, sasl_ssl: bool = False
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.script = script
        self.port = free_port()
        self.controller_port = free_port()
        # Kafka only: a second listener, SASL_SSL with SCRAM-SHA-512 (see devstack.sh).
        self.sasl_port = free_port() if sasl_ssl else None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DEVSTACK_DIR=str(self.workdir),
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            REDIS_PORT=str(self.port),
            PG_PORT=str(self.port),
            KAFKA_HEAP="256m",
        )
        if self.sasl_port is not None:
            env["KAFKA_SASL_PORT"] = str(self.sasl_port)
        return env

    @property
    def ca_location(self) -> Path:
        """The CA certificate of the SASL_SSL listener."""
        return self.workdir / "kafka" / "tls" / "ca.pem"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://alphapanda:dev-db-password@127.0.0.1:{self.port}/alphapanda"

    @property
    def pid(self) -> int:
        return int((self.workdir / f"{self.name}.pid").read_text().strip())

    def _run(self, action: str) -> None:
        proc = subprocess.run(
            [str(self.script), action, self.name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"devstack {action} {self.name} failed:\n{proc.stderr[-3000:]}")

    def start(self) -> None:
        """Start (idempotent); returns once the service accepts connections."""
        self._run("up")

    def stop(self) -> None:
        """Graceful stop (idempotent)."""
        self._run("down")

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
