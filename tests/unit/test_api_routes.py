"""The API's routes over a fake feed, in-process: health, readiness, status, metrics and
subscription management in the feed role, and what the monitor role answers from Redis."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import SecretStr
from starlette.requests import Request

from alphapanda.api import routes
from alphapanda.metrics import catalog
from alphapanda.metrics.redis_layout import SNAPSHOT, MetricsKeys
from alphapanda.settings import Settings
from tests.support.api import (
    API_KEY,
    KEY_HEADER,
    BrokenSource,
    FailingFeed,
    FakeFeed,
    FakeRedis,
    ScriptedLimiter,
    StaticSource,
    build_app,
    client_of,
    reader_of,
    unit_settings,
)

pytestmark = pytest.mark.unit

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def _settings_with_secrets() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        api={"api_key": SecretStr(API_KEY)},  # type: ignore[arg-type]
        kite={"access_token": SecretStr("tok-SECRET-a1b2c3")},  # type: ignore[arg-type]
    )


async def _get(control: Any, path: str, **app_options: Any) -> Any:
    async with client_of(build_app(control, **app_options)) as http:
        return await http.get(path)


# --- /health -------------------------------------------------------------------------


async def test_health_is_ok_and_names_the_feed_role() -> None:
    response = await _get(FakeFeed(), "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "role": "feed"}


async def test_health_names_the_monitor_role_when_there_is_no_feed() -> None:
    response = await _get(None, "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "role": "monitor"}


async def test_health_is_503_with_the_reason_once_the_feed_is_unhealthy() -> None:
    response = await _get(FailingFeed(failure="producer fatal error: _FENCED"), "/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "failing",
        "role": "feed",
        "reason": "producer fatal error: _FENCED",
    }


async def test_health_is_ok_while_the_feed_reports_no_failure() -> None:
    response = await _get(FailingFeed(failure=None), "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_health_answers_head_probes_without_a_body() -> None:
    async with client_of(build_app(FailingFeed(failure=None))) as http:
        response = await http.head("/health")
    assert response.status_code == 200
    assert response.content == b""


# --- /ready --------------------------------------------------------------------------


async def test_ready_is_200_with_no_reasons_when_the_feed_is_ready() -> None:
    response = await _get(FakeFeed(ready=True), "/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reasons": []}


async def test_ready_is_503_with_the_feeds_reasons_when_it_is_not() -> None:
    feed = FakeFeed(ready=False, reasons=["no Kite connection is streaming", "topic missing"])
    response = await _get(feed, "/ready")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "reasons": ["no Kite connection is streaming", "topic missing"],
    }


@pytest.mark.parametrize("able", [True, False])
async def test_ready_of_a_standby_is_503_and_says_whether_it_could_take_over(able: bool) -> None:
    reason = "standby in hot-standby group g (not publishing)"
    feed = FakeFeed(ready=False, reasons=[reason], standby=able)
    response = await _get(feed, "/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reasons": [reason], "standby_ready": able}


async def test_the_monitor_role_has_no_ready_or_subscription_routes() -> None:
    async with client_of(build_app(None)) as http:
        assert (await http.get("/ready")).status_code == 404
        assert (await http.get("/subscriptions")).status_code == 404
        posted = await http.post("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
        assert posted.status_code == 404


# --- GET /subscriptions --------------------------------------------------------------


async def test_subscriptions_are_listed_by_token_with_counts_by_mode() -> None:
    feed = FakeFeed(subscribed={30: "full", 4: "quote", 200: "quote"})
    response = await _get(feed, "/subscriptions")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "total": 3,
        "by_mode": {"full": 1, "quote": 2},
        "subscriptions": {"4": "quote", "30": "full", "200": "quote"},
    }
    # Listed in token order, not the feed's insertion order.
    assert list(body["subscriptions"]) == ["4", "30", "200"]


async def test_listing_subscriptions_needs_no_api_key() -> None:
    response = await _get(FakeFeed(subscribed={1: "ltp"}), "/subscriptions")
    assert response.status_code == 200
    assert response.json()["total"] == 1


# --- POST /subscriptions -------------------------------------------------------------


async def test_adding_subscriptions_reports_the_change_and_the_new_totals() -> None:
    feed = FakeFeed(subscribed={1: "quote"})
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [2, 3], "mode": "full"}, headers=KEY_HEADER
        )
    assert response.status_code == 200
    assert response.json() == {"changed": 2, "total": 3, "by_mode": {"full": 2, "quote": 1}}
    assert feed.subscribed == {1: "quote", 2: "full", 3: "full"}


async def test_mode_defaults_to_quote() -> None:
    feed = FakeFeed()
    async with client_of(build_app(feed)) as http:
        response = await http.post("/subscriptions", json={"tokens": [5]}, headers=KEY_HEADER)
    assert response.status_code == 200
    assert feed.added == [([5], "quote")]


async def test_tokens_reach_the_feed_once_each_and_in_order() -> None:
    feed = FakeFeed()
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [9, 3, 9, 3, 7], "mode": "ltp"}, headers=KEY_HEADER
        )
    assert response.status_code == 200
    assert feed.added == [([3, 7, 9], "ltp")]
    assert response.json()["changed"] == 3


async def test_only_tokens_whose_mode_changed_are_counted_as_changed() -> None:
    feed = FakeFeed(subscribed={1: "quote", 2: "full"})
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [1, 2], "mode": "full"}, headers=KEY_HEADER
        )
    assert response.status_code == 200
    assert response.json() == {"changed": 1, "total": 2, "by_mode": {"full": 2}}


async def test_unknown_tokens_are_422_naming_them_and_nothing_is_applied() -> None:
    feed = FakeFeed(known={1, 2}, subscribed={1: "quote"})
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [2, 999, 555], "mode": "full"}, headers=KEY_HEADER
        )
    assert response.status_code == 422
    body = response.json()
    assert body["unknown_tokens"] == [555, 999]
    assert body["detail"] == "unknown instrument tokens: 555, 999"
    assert feed.subscribed == {1: "quote"}


async def test_over_capacity_is_409_with_the_numbers_and_nothing_is_applied() -> None:
    feed = FakeFeed(capacity=2, subscribed={1: "quote", 2: "quote"})
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [3, 4], "mode": "quote"}, headers=KEY_HEADER
        )
    assert response.status_code == 409
    body = response.json()
    assert (body["requested"], body["capacity"]) == (4, 2)
    assert "capacity is 2" in body["detail"]
    assert feed.subscribed == {1: "quote", 2: "quote"}


@pytest.mark.parametrize(
    ("body", "detail_start"),
    [
        ({"tokens": [1], "mode": "snapshot"}, "mode:"),
        ({"tokens": []}, "tokens:"),
        ({"mode": "full"}, "tokens:"),
        ({"tokens": ["123"]}, "tokens.0:"),  # strict: a string is a client bug
        ({"tokens": [1.5]}, "tokens.0:"),
        ({"tokens": [0]}, "tokens.0:"),
        ({"tokens": [2**32]}, "tokens.0:"),
        ({"tokens": [1], "extra": "x"}, "extra:"),
    ],
)
async def test_an_invalid_body_is_422_with_a_short_message_naming_the_field(
    body: dict[str, Any], detail_start: str
) -> None:
    feed = FakeFeed()
    async with client_of(build_app(feed)) as http:
        response = await http.post("/subscriptions", json=body, headers=KEY_HEADER)
    assert response.status_code == 422
    assert set(response.json()) == {"detail"}
    assert response.json()["detail"].startswith(detail_start), response.json()
    assert feed.added == []


async def test_a_validation_error_does_not_echo_the_rejected_input() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": ["hunter2-secret"]}, headers=KEY_HEADER
        )
    assert response.status_code == 422
    assert "hunter2" not in response.text


async def test_a_body_that_is_not_json_is_refused_and_nothing_is_applied() -> None:
    feed = FakeFeed()
    async with client_of(build_app(feed)) as http:
        response = await http.post(
            "/subscriptions",
            content=b"{not json",
            headers={**KEY_HEADER, "Content-Type": "application/json"},
        )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]
    assert feed.added == []


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_adding_or_removing_without_the_right_key_is_401_and_changes_nothing(
    headers: dict[str, str],
) -> None:
    feed = FakeFeed(subscribed={1: "quote"})
    async with client_of(build_app(feed)) as http:
        added = await http.post("/subscriptions", json={"tokens": [2]}, headers=headers)
        removed = await http.request(
            "DELETE", "/subscriptions", json={"tokens": [1]}, headers=headers
        )
    assert (added.status_code, removed.status_code) == (401, 401)
    assert added.json() == {"detail": "missing or invalid X-API-Key"}
    assert feed.added == [] and feed.removed == []
    assert feed.subscribed == {1: "quote"}


def _request_to(control: Any, settings: Settings) -> Request:
    app = build_app(control, settings=settings)
    return Request({"type": "http", "app": app, "method": "POST", "path": "/", "headers": []})


def test_the_key_dependency_accepts_only_the_configured_key() -> None:
    request = _request_to(FakeFeed(), unit_settings())
    routes.require_api_key(request, API_KEY)  # no exception
    with pytest.raises(HTTPException) as refused:
        routes.require_api_key(request, API_KEY + "x")
    assert refused.value.status_code == 401
    assert refused.value.headers == {"WWW-Authenticate": "X-API-Key"}
    with pytest.raises(HTTPException):
        routes.require_api_key(request, None)


def test_an_empty_configured_key_lets_no_one_write() -> None:
    request = _request_to(FakeFeed(), unit_settings(api_key=SecretStr("")))
    for presented in ("", None, "anything"):
        with pytest.raises(HTTPException) as refused:
            routes.require_api_key(request, presented)
        assert refused.value.status_code == 401


# --- DELETE /subscriptions -----------------------------------------------------------


async def test_removing_counts_only_tokens_that_were_subscribed() -> None:
    feed = FakeFeed(subscribed={1: "quote", 2: "full", 3: "ltp"})
    async with client_of(build_app(feed)) as http:
        response = await http.request(
            "DELETE", "/subscriptions", json={"tokens": [3, 1, 77, 1]}, headers=KEY_HEADER
        )
    assert response.status_code == 200
    assert response.json() == {"changed": 2, "total": 1, "by_mode": {"full": 1}}
    assert feed.removed == [[1, 3, 77]]


async def test_removing_rejects_a_mode_field() -> None:
    feed = FakeFeed(subscribed={1: "quote"})
    async with client_of(build_app(feed)) as http:
        response = await http.request(
            "DELETE", "/subscriptions", json={"tokens": [1], "mode": "full"}, headers=KEY_HEADER
        )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("mode:")
    assert feed.removed == []


# --- 404 / 405 -----------------------------------------------------------------------


async def test_an_unknown_path_is_a_json_404() -> None:
    response = await _get(FakeFeed(), "/no-such-route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_a_wrong_method_is_405_and_allow_lists_every_method_of_the_path() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        response = await http.put("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == "DELETE, GET, POST"


async def test_405_on_health_allows_get_and_head() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        response = await http.post("/health")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


# --- /status (feed role) -------------------------------------------------------------


def _figures() -> StaticSource:
    return StaticSource(
        [
            catalog.TICKS_RECEIVED.sample(1234),
            catalog.SENDS_OK.sample(1200),
            catalog.TICKS_DROPPED.sample(7, (("reason", "drop_oldest"),)),
            catalog.TICKS_DROPPED.sample(0, (("reason", "conflated"),)),
            catalog.BUFFER_DEPTH.sample(12, (("policy", "block"),)),
            catalog.SPOOL_MESSAGES.sample(4),
            catalog.SPOOL_BYTES.sample(400),
            catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(NOW - 2.5),
        ]
    )


def _shard(**overrides: Any) -> dict[str, Any]:
    shard: dict[str, Any] = {
        "shard": 0,
        "state": "connected",
        "since": "2025-11-24T15:59:00+00:00",
        "reconnect_count": 1,
        "last_disconnect_reason": None,
        "instruments": 2,
        "ticks_received": 1000,
        "last_frame_age": 0.25,
    }
    shard.update(overrides)
    return shard


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Wall clock at ``NOW``; the monotonic readings the route takes, in order."""
    readings = [100.0, 102.0]
    monkeypatch.setattr(routes, "now_epoch", lambda: NOW)
    monkeypatch.setattr(routes, "_monotonic", lambda: readings.pop(0))
    return readings


async def test_live_status_reports_the_feeds_figures_and_settings(
    frozen_clock: list[float],
) -> None:
    feed = FakeFeed(
        subscribed={1: "full", 2: "quote"},
        shards=[_shard()],
        sources=[_figures()],
        ready=False,
        reasons=["broker not reachable"],
    )
    response = await _get(feed, "/status")
    assert response.status_code == 200
    status = response.json()
    assert status["source"] == "feed" and status["available"] is True
    assert status["ready"] is False
    assert status["updated_at"] == "2025-11-24T16:00:00.000+00:00"
    assert status["ticks_received"] == 1234
    assert status["ticks_per_second"] is None  # one reading spans no time yet
    assert status["last_tick_age_seconds"] == pytest.approx(2.5)
    assert (status["sends_ok"], status["sends_failed"]) == (1200, 0)
    assert status["drops"] == {"drop_oldest": 7}  # reasons at zero are left out
    defaults = Settings(_env_file=None).feed  # type: ignore[call-arg]
    assert status["buffer"] == {
        "depth": 12,
        "capacity": defaults.buffer_capacity,
        "policy": defaults.buffer_policy,
    }
    assert status["spool"] == {"bytes": 400, "messages": 4}
    assert status["subscriptions"] == {"full": 1, "quote": 1}
    assert status["connections"] == [
        {
            "shard": "0",
            "state": "connected",
            "since": "2025-11-24T15:59:00+00:00",
            "reconnect_count": 1,
            "last_disconnect_reason": None,
            "instruments": 2,
            "ticks_received": 1000,
            "last_frame_age_seconds": 0.25,
        }
    ]


async def test_ticks_per_second_is_measured_across_successive_status_reads(
    frozen_clock: list[float],
) -> None:
    source = StaticSource([catalog.TICKS_RECEIVED.sample(1000)])
    async with client_of(build_app(FakeFeed(sources=[source]))) as http:
        first = (await http.get("/status")).json()
        source.figures = [catalog.TICKS_RECEIVED.sample(1600)]
        second = (await http.get("/status")).json()
    assert first["ticks_per_second"] is None
    assert second["ticks_per_second"] == pytest.approx(300.0)  # 600 ticks over 2 s


async def test_a_failing_metrics_source_is_left_out_whole_and_status_still_answers(
    frozen_clock: list[float],
) -> None:
    feed = FakeFeed(sources=[BrokenSource(), StaticSource([catalog.TICKS_RECEIVED.sample(5)])])
    response = await _get(feed, "/status")
    assert response.status_code == 200
    # The broken source's half-reported figure (999999) is not counted.
    assert response.json()["ticks_received"] == 5


async def test_secrets_in_a_disconnect_reason_are_redacted(frozen_clock: list[float]) -> None:
    reason = "closed: wss://ws.kite.trade?api_key=k&access_token=tok-SECRET-a1b2c3"
    feed = FakeFeed(shards=[_shard(last_disconnect_reason=reason)])
    response = await _get(feed, "/status", settings=_settings_with_secrets())
    shown = response.json()["connections"][0]["last_disconnect_reason"]
    assert "tok-SECRET" not in response.text
    assert shown == "closed: wss://ws.kite.trade?api_key=k&access_token=***"


# --- /status and /metrics (monitor role) ---------------------------------------------


def _snapshot() -> dict[str, Any]:
    return {
        "updated_at": "2025-11-24T16:00:00.000+00:00",
        "count": 42,
        "ticks_per_second": 9.5,
        "connections": {"0": {"state": "connected"}},
        "samples": [
            {"name": "sends_ok_total", "kind": "counter", "value": 40, "labels": {}},
            {"name": "feed_ready", "kind": "gauge", "value": 1, "labels": {}},
        ],
    }


async def test_monitor_status_comes_from_the_snapshot_of_its_namespace() -> None:
    redis = FakeRedis(_snapshot())
    response = await _get(None, "/status", reader=reader_of(redis, "desk-7"))
    assert response.status_code == 200
    status = response.json()
    assert status["source"] == "redis" and status["available"] is True
    assert (status["ticks_received"], status["ticks_per_second"]) == (42, 9.5)
    assert status["sends_ok"] == 40 and status["ready"] is True
    assert [c["shard"] for c in status["connections"]] == ["0"]
    assert redis.keys_read == [MetricsKeys("desk-7").key(SNAPSHOT)]


async def test_monitor_status_without_a_snapshot_is_200_but_unavailable() -> None:
    response = await _get(None, "/status", reader=reader_of(FakeRedis(None)))
    assert response.status_code == 200
    assert response.json()["available"] is False
    assert response.json()["source"] == "redis"


async def test_monitor_status_and_metrics_are_503_while_redis_is_unreachable() -> None:
    reader = reader_of(FakeRedis(down=True))
    async with client_of(build_app(None, reader=reader)) as http:
        status = await http.get("/status")
        metrics = await http.get("/metrics")
    for response in (status, metrics):
        assert response.status_code == 503
        assert response.json() == {"detail": "metrics store (Redis) unreachable"}


async def test_monitor_status_is_503_without_a_metrics_store() -> None:
    response = await _get(None, "/status")
    assert response.status_code == 503
    assert response.json() == {"detail": "no metrics store configured"}


async def test_monitor_metrics_carry_the_snapshot_figures_but_not_its_own_process() -> None:
    response = await _get(None, "/metrics", reader=reader_of(FakeRedis(_snapshot())))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "alphapanda_sends_ok_total 40.0" in response.text
    assert "process_resident_memory_bytes" not in response.text


# --- /metrics (feed role) ------------------------------------------------------------


async def test_metrics_are_prometheus_text_of_the_feed_and_the_rate_limiter() -> None:
    limiter = ScriptedLimiter()
    feed = FakeFeed(sources=[StaticSource([catalog.TICKS_RECEIVED.sample(77)])])
    async with client_of(build_app(feed, limiter=limiter)) as http:
        await http.get("/subscriptions")
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE alphapanda_ticks_received_total counter" in text
    assert "alphapanda_ticks_received_total 77.0" in text
    # The limiter had counted two checks when /metrics asked it for its samples.
    assert 'alphapanda_api_requests_allowed_total{route_class="read"} 2.0' in text
    assert "process_resident_memory_bytes" in text
