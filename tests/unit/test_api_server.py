"""How the API is served, as far as that is decided without a socket: the uvicorn
configuration ``serve_app`` uses. (Serving itself is covered by the integration tests.)"""

from __future__ import annotations

import pytest

from alphapanda.api.server import server_config
from tests.support.api import FakeFeed, build_app

pytestmark = pytest.mark.unit


def test_uvicorn_leaves_logging_signals_and_forwarded_headers_to_the_api() -> None:
    config = server_config(build_app(FakeFeed()), "127.0.0.1", 18080, 2.4, 64)
    assert (config.host, config.port) == ("127.0.0.1", 18080)
    assert config.log_config is None and config.access_log is False
    # The API applies settings.api.trusted_proxies itself.
    assert config.proxy_headers is False
    assert config.lifespan == "off"
    assert config.server_header is False
    assert config.limit_concurrency == 64
    assert config.http == "httptools"


@pytest.mark.parametrize(("grace", "seconds"), [(0.2, 1), (1.0, 1), (2.4, 2), (2.6, 3)])
def test_graceful_shutdown_is_whole_seconds_and_at_least_one(grace: float, seconds: int) -> None:
    config = server_config(build_app(FakeFeed()), "127.0.0.1", 1, grace)
    assert config.timeout_graceful_shutdown == seconds


def test_without_a_connection_cap_uvicorn_sets_none() -> None:
    assert server_config(build_app(FakeFeed()), "127.0.0.1", 1, 1.0).limit_concurrency is None
