"""Redis with a password (``requirepass``) and over TLS (``rediss://``): a private
redis-server of this test, reached by the real CLI and by the metrics writer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from alphapanda.metrics.collector import redis_from_url
from tests.integration.test_secure_startup import run_cli
from tests.support.services import free_port, port_open

PASSWORD = "redis-pw-4c2e9"


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(plain port, TLS port, CA file) of a redis-server that requires PASSWORD."""
    tls = tmp_path / "tls"
    tls.mkdir()
    ca, key, crt = tls / "ca.pem", tls / "server.key", tls / "server.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            tls / "ca.key",
            "-out",
            ca,
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key,
            "-out",
            tls / "server.csr",
        ],
        check=True,
        capture_output=True,
    )
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            tls / "server.csr",
            "-CA",
            ca,
            "-CAkey",
            tls / "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            tls / "san.ext",
            "-out",
            crt,
        ],
        check=True,
        capture_output=True,
    )
    port, tls_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(crt),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (port_open(port) and port_open(tls_port)):
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port, tls_port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _doctor_redis_row(url: str) -> str:
    result = run_cli("doctor", ALPHAPANDA_REDIS__URL=url)
    rows = [line for line in result.stdout.splitlines() if "redis" in line.lower()]
    assert rows, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return rows[0]


def test_doctor_reaches_redis_with_its_password(secured_redis: tuple[int, int, Path]) -> None:
    port, _, _ = secured_redis
    assert "OK" in _doctor_redis_row(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert "FAIL" in _doctor_redis_row(f"redis://:wrong-password@127.0.0.1:{port}/0")
    assert "FAIL" in _doctor_redis_row(f"redis://127.0.0.1:{port}/0")


async def test_metrics_writer_over_rediss_with_password(
    secured_redis: tuple[int, int, Path],
) -> None:
    _, tls_port, ca = secured_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
    client: redis.Redis = redis_from_url(url, timeout=5)
    try:
        await client.set("alphapanda:tls-check", "1")
        assert await client.get("alphapanda:tls-check") == b"1"
    finally:
        await client.aclose()
