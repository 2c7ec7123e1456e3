"""Pure parts of the control API: key checks, caller identity, route classes, status shape."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from alphapanda.api.control import OverCapacity, UnknownInstruments, check_subscription_request
from alphapanda.api.ratelimit import classify, storage_uri
from alphapanda.api.security import (
    client_address,
    identify,
    key_fingerprint,
    key_matches,
    parse_trusted_proxies,
    redact,
    secret_values,
)
from alphapanda.api.status import RateMeter, status_from_snapshot

KEY = SecretStr("s3cret-key")


def test_key_matches_only_the_exact_key() -> None:
    assert key_matches("s3cret-key", KEY)
    assert not key_matches("s3cret-ke", KEY)
    assert not key_matches("s3cret-key ", KEY)
    assert not key_matches("", KEY)
    assert not key_matches(None, KEY)


def test_an_empty_configured_key_accepts_nobody() -> None:
    assert not key_matches("", SecretStr(""))
    assert not key_matches("anything", SecretStr(""))


def test_fingerprint_is_stable_and_does_not_contain_the_key() -> None:
    assert key_fingerprint("s3cret-key") == key_fingerprint("s3cret-key")
    assert key_fingerprint("s3cret-key") != key_fingerprint("other")
    assert "s3cret" not in key_fingerprint("s3cret-key")


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    trusted = parse_trusted_proxies(["10.0.0.0/8"])
    assert client_address("203.0.113.5", "1.2.3.4", trusted) == "203.0.113.5"
    assert client_address("203.0.113.5", "1.2.3.4", ()) == "203.0.113.5"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() -> None:
    trusted = parse_trusted_proxies(["10.0.0.0/8", "192.168.1.1"])
    # The client wrote "6.6.6.6" itself; our proxies appended the real address.
    assert client_address("10.1.1.1", "6.6.6.6, 198.51.100.7, 192.168.1.1", trusted) == (
        "198.51.100.7"
    )
    assert client_address("10.1.1.1", "garbage", trusted) == "10.1.1.1"


def test_identity_uses_the_key_digest_only_for_a_valid_key() -> None:
    valid = identify({"x-api-key": "s3cret-key"}, "127.0.0.1", KEY, ())
    assert valid.authenticated
    assert valid.bucket == f"key:{key_fingerprint('s3cret-key')}"
    assert "s3cret" not in valid.bucket
    # A made-up key must not buy a fresh bucket: it is keyed on the address.
    guessed = identify({"x-api-key": "guess-1"}, "127.0.0.1", KEY, ())
    assert guessed == identify({"x-api-key": "guess-2"}, "127.0.0.1", KEY, ())
    assert guessed.bucket == "addr:127.0.0.1"
    assert not guessed.authenticated


def test_spoofed_forwarded_for_does_not_change_the_bucket() -> None:
    a = identify({"x-forwarded-for": "1.1.1.1"}, "127.0.0.1", KEY, ())
    b = identify({"x-forwarded-for": "2.2.2.2"}, "127.0.0.1", KEY, ())
    assert a.bucket == b.bucket == "addr:127.0.0.1"


def test_route_classes() -> None:
    assert classify("GET", "/health") == "exempt"
    assert classify("GET", "/status") == "read"
    assert classify("GET", "/no-such-path") == "read"
    assert classify("POST", "/subscriptions") == "mutating"
    assert classify("delete", "/subscriptions") == "mutating"
    assert classify("POST", "/health") == "mutating"


def test_storage_uri() -> None:
    assert storage_uri("redis://:pw@h:1/0") == "async+redis://:pw@h:1/0"
    assert storage_uri("rediss://h:1/0") == "async+rediss://h:1/0"
    assert storage_uri("unix:///tmp/r.sock") == "async+redis+unix:///tmp/r.sock"


def test_redact_replaces_secrets_and_url_passwords() -> None:
    secrets = secret_values(
        SecretStr("tok-abcdef"), SecretStr("redis://user:hunter22@host:6379/0"), SecretStr("")
    )
    text = "closed wss://x?api_key=k&access_token=tok-abcdef; redis pw hunter22"
    cleaned = redact(text, secrets)
    assert "tok-abcdef" not in cleaned and "hunter22" not in cleaned
    assert cleaned.count("***") == 2


def test_subscription_request_checks() -> None:
    with pytest.raises(UnknownInstruments) as unknown:
        check_subscription_request({}, [1, 2, 99, 98], known=[1, 2], capacity=10)
    assert unknown.value.tokens == [98, 99]
    assert "98, 99" in str(unknown.value)
    with pytest.raises(OverCapacity) as over:
        check_subscription_request({1: "quote", 2: "quote"}, [3, 4], known=[1, 2, 3, 4], capacity=3)
    assert (over.value.requested_total, over.value.capacity) == (4, 3)
    # Changing the mode of subscribed tokens adds nothing.
    check_subscription_request({1: "quote", 2: "quote"}, [1, 2], known=[1, 2], capacity=2)


def test_rate_meter() -> None:
    meter = RateMeter(window_seconds=5.0)
    assert meter.observe(100.0, 0) is None
    assert meter.observe(101.0, 1000) == pytest.approx(1000.0)
    assert meter.observe(102.0, 3000) == pytest.approx(1500.0)
    # A counter that went backwards is a new feed: start over.
    assert meter.observe(103.0, 10) is None
    for t in range(104, 120):
        rate = meter.observe(float(t), 10 + (t - 103) * 50)
    assert rate == pytest.approx(50.0)


def _sample(name: str, value: float, **labels: str) -> dict[str, object]:
    kind = "counter" if name.endswith("_total") else "gauge"
    return {"name": name, "kind": kind, "value": value, "labels": labels}


def test_status_from_snapshot_reads_the_collector_document() -> None:
    snapshot = {
        "updated_at": "2026-01-01T00:00:00.000+00:00",
        "count": 1234,
        "ticks_per_second": 55.5,
        "last_tick_age_seconds": 0.2,
        "connections": {"0": {"state": "connected", "connection_ticks_received_total": 1000.0}},
        "samples": [
            _sample("ticks_received_total", 1234, source="socket"),
            _sample("sends_ok_total", 1200),
            _sample("sends_failed_total", 3, error="timeout"),
            _sample("send_latency_seconds", 0.002, quantile="0.5"),
            _sample("send_latency_seconds", 0.01, quantile="0.99"),
            _sample("ticks_dropped_total", 7, reason="drop_oldest"),
            _sample("ticks_dropped_total", 0, reason="conflated"),
            _sample("kite_reconnect_attempts_total", 2, reason="closed_by_server"),
            _sample("buffer_depth", 12, policy="block"),
            _sample("spool_messages", 4),
            _sample("spool_bytes", 400),
            _sample("connection_subscriptions", 5, mode="full"),
        ],
    }
    view = status_from_snapshot(snapshot, 50_000, "block")
    assert view.available and view.source == "redis"
    assert view.ticks_received == 1234 and view.ticks_per_second == 55.5
    assert (view.sends_ok, view.sends_failed) == (1200, 3)
    assert view.send_latency_seconds.p99 == 0.01
    assert view.drops == {"drop_oldest": 7}  # zero reasons are left out
    assert view.reconnects == {"closed_by_server": 2}
    assert view.buffer.depth == 12 and view.buffer.capacity == 50_000
    assert (view.spool.messages, view.spool.bytes) == (4, 400)
    assert view.subscriptions == {"full": 5}
    assert [(c.shard, c.state, c.ticks_received) for c in view.connections] == [
        ("0", "connected", 1000)
    ]
    assert not status_from_snapshot(None, 1, "block").available
