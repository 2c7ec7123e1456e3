"""Real services for tests: the shared local stack, and private instances a test may abuse.

The shared stack (``make services-up``) is used by most integration tests; each test
isolates itself by topic prefix / key prefix / schema. A test that kills, pauses or
stops a service starts a private one with the same script on free ports, so other
tests (and other developers' runs) are never disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "scripts" / "devstack.sh"

SHARED_KAFKA = os.environ.get("ALPHAPANDA_TEST_KAFKA", "127.0.0.1:19092")
SHARED_REDIS = os.environ.get("ALPHAPANDA_TEST_REDIS", "redis://127.0.0.1:16379/0")
SHARED_DATABASE = os.environ.get(
    "ALPHAPANDA_TEST_DATABASE",
    "postgresql+asyncpg://alphapanda:alphapanda@127.0.0.1:15432/alphapanda",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class PrivateService:
    """One of kafka/redis/postgres, started by ``scripts/devstack.sh`` in its own folder."""

    name: str
    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

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
        return env

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://alphapanda:alphapanda@127.0.0.1:{self.port}/alphapanda"

    def _run(self, action: str) -> None:
        proc = subprocess.run(
            [str(DEVSTACK), action, self.name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"devstack {action} {self.name} failed:\n{proc.stderr[-3000:]}")

    def start(self) -> None:
        self._run("up")

    def stop(self) -> None:
        """Graceful stop (TERM); idempotent."""
        self._run("down")

    def kill(self) -> None:
        """SIGKILL, as a crash would; the pid file stays so ``start`` knows it is dead."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            # Reap it if it is our child; devstack starts it detached, so usually not.
            time.sleep(0.05)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
