"""The control bridge between the API process and the feed, over real socket pairs.

The feed's side answers on a loop of its own (a thread here, the feed's loop in
production), so the API side can block on its calls as it does in the API process."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

from alphapanda.api.bridge import MAX_REQUEST_BYTES, RemoteControl, serve_channel
from alphapanda.api.control import OverCapacity, SubscriptionRejected, UnknownInstruments
from alphapanda.metrics import catalog
from tests.support.api import API_KEY, FailingFeed, FakeFeed, StaticSource, build_app, client_of
from tests.unit.test_api_quotes import _feed_with_quotes

pytestmark = pytest.mark.unit

KEY = {"X-API-Key": API_KEY}


@contextmanager
def answering(control: Any, socks: list[socket.socket]) -> Iterator[Counter[str]]:
    """``control`` answers on ``socks`` (the feed's ends) on a loop in another thread
    until the other ends close; yields the calls answered, by name."""
    calls: Counter[str] = Counter()

    async def feed_side() -> None:
        async with asyncio.TaskGroup() as tg:
            for sock in socks:
                tg.create_task(serve_channel(control, sock, calls))

    thread = threading.Thread(target=asyncio.run, args=(feed_side(),))
    thread.start()
    try:
        yield calls
    finally:
        thread.join()


@contextmanager
def bridged(control: Any, channels: int = 2) -> Iterator[tuple[RemoteControl, Counter[str]]]:
    """A ``RemoteControl`` whose calls ``control`` answers across socket pairs."""
    pairs = [socket.socketpair() for _ in range(channels)]
    theirs = [b for _, b in pairs]
    with answering(control, [a for a, _ in pairs]) as calls:
        try:
            yield RemoteControl(theirs, quotes=True, timeout=10), calls
        finally:
            for sock in theirs:
                sock.close()


@contextmanager
def raw_channel(control: Any) -> Iterator[tuple[socket.socket, Counter[str]]]:
    """The API's end of one channel ``control`` answers, to write bytes on by hand."""
    ours, theirs = socket.socketpair()
    with theirs, answering(control, [ours]) as calls:
        try:
            yield theirs, calls
        finally:
            theirs.shutdown(socket.SHUT_RDWR)


def _raw_call(sock: socket.socket, request: Any) -> Any:
    body = msgspec.msgpack.encode(request)
    sock.sendall(struct.pack(">I", len(body)) + body)
    (length,) = struct.unpack(">I", sock.recv(4))
    return msgspec.msgpack.decode(sock.recv(length))


def test_every_call_crosses_and_refusals_keep_their_type() -> None:
    feed = FakeFeed(
        ready=False,
        reasons=["no Kite connection is streaming"],
        standby=True,
        shards=[{"shard": 0, "state": "connected", "last_frame_age": 0.01}],
        subscribed={5: "ltp"},
        capacity=3,
        sources=[StaticSource([catalog.TICKS_RECEIVED.sample(7, (("shard", "0"),))])],
    )
    with bridged(feed) as (remote, calls):
        assert remote.readiness() == (False, ["no Kite connection is streaming"])
        assert remote.standby_ready() is True
        assert remote.connections() == feed.shards
        assert remote.unhealthy() is None
        asyncio.run(remote.add_subscriptions([6, 7], "full"))
        assert remote.subscriptions() == {5: "ltp", 6: "full", 7: "full"}
        with pytest.raises(UnknownInstruments) as unknown:
            asyncio.run(remote.add_subscriptions([500, 8], "ltp"))
        assert unknown.value.tokens == [500]
        with pytest.raises(OverCapacity) as over:
            asyncio.run(remote.add_subscriptions([8], "ltp"))
        assert (over.value.requested_total, over.value.capacity) == (4, 3)
        asyncio.run(remote.remove_subscriptions([5]))
        [source] = remote.metrics_sources()
        assert list(source.samples()) == list(feed.sources[0].samples())
    assert feed.subscribed == {6: "full", 7: "full"}
    assert calls["add_subscriptions"] == 3 and calls["readiness"] == 1
    assert calls["samples"] == 1 and calls["remove_subscriptions"] == 1


def test_the_feed_answers_only_known_calls_with_valid_arguments() -> None:
    feed = FakeFeed()
    with bridged(feed, channels=1) as (remote, calls):
        for name, args in [
            ("metrics_sources", []),  # not a call of the bridge
            ("add_subscriptions", [[1, 2], "everything"]),  # no such mode
            ("add_subscriptions", [[-1], "ltp"]),  # not a token
            ("remove_subscriptions", []),  # tokens missing
            ("recent_candles", [1, 1000]),  # beyond the limit
        ]:
            with pytest.raises(RuntimeError, match="the feed failed a control call"):
                remote.call(name, *args)
        # The channel still serves after its refusals.
        assert remote.subscriptions() == {}
    assert feed.added == [] and feed.removed == []
    assert "metrics_sources" not in calls  # an unknown name is no label of the count


def test_a_subscription_refusal_keeps_its_message() -> None:
    class Refusing(FakeFeed):
        async def add_subscriptions(self, tokens: Any, mode: str) -> None:
            raise SubscriptionRejected("not now")

    with bridged(Refusing()) as (remote, _), pytest.raises(SubscriptionRejected, match="not now"):
        asyncio.run(remote.add_subscriptions([1], "ltp"))


async def test_the_routes_answer_through_the_bridge_as_they_do_in_process() -> None:
    feed = _feed_with_quotes((7, 100.0), (7, 101.5), (9, 3.0))
    feed.known = {7, 9, 11}
    with bridged(feed) as (remote, calls):
        async with client_of(build_app(feed)) as direct, client_of(build_app(remote)) as bridged_:
            for path in [
                "/quotes/7",
                "/quotes",
                "/quotes?tokens=9,7,12",
                "/candles/7?limit=5",
                # Integers no instrument can have: no quote, no candles, as in process.
                f"/quotes/{2**64}",
                "/quotes?tokens=7,9999999999",
                f"/candles/{-(2**70)}",
            ]:
                here, there = await direct.get(path), await bridged_.get(path)
                assert (there.status_code, there.json()) == (here.status_code, here.json()), path
            assert (await bridged_.get("/quotes/12")).status_code == 404
            refused = await bridged_.post(
                "/subscriptions", json={"tokens": [7, 500], "mode": "ltp"}, headers=KEY
            )
            assert refused.status_code == 422 and refused.json()["unknown_tokens"] == [500]
            keyless = await bridged_.post("/subscriptions", json={"tokens": [7], "mode": "ltp"})
            assert keyless.status_code == 401
    assert calls["quote_records"] >= 4 and calls["quote_tokens"] == 1
    # The keyless write never reached the feed: one add_subscriptions, the refused one.
    assert calls["add_subscriptions"] == 1 and feed.added == [([7, 500], "ltp")]


async def test_health_reports_the_feeds_failure_through_the_bridge() -> None:
    with bridged(FailingFeed()) as (remote, calls):
        async with client_of(build_app(remote)) as http:
            for _ in range(3):
                reply = await http.get("/health")
                assert reply.status_code == 503
                assert reply.json()["reason"] == "producer fatal error: _FENCED"
    # Once unhealthy, a feed stays so: asked once.
    assert calls["unhealthy"] == 1


def test_an_oversized_request_closes_the_channel() -> None:
    with raw_channel(FakeFeed()) as (sock, calls):
        sock.sendall(struct.pack(">I", MAX_REQUEST_BYTES + 1))
        # The feed side returned by itself and closed its end.
        assert sock.recv(1) == b""
    assert not calls


def test_a_malformed_request_closes_the_channel() -> None:
    with raw_channel(FakeFeed()) as (sock, _):
        body = msgspec.msgpack.encode({"not": "a request"})
        sock.sendall(struct.pack(">I", len(body)) + body)
        assert sock.recv(1) == b""


def test_a_raw_request_gets_its_id_back() -> None:
    with raw_channel(FakeFeed(subscribed={3: "quote"})) as (sock, _):
        assert _raw_call(sock, [41, "subscriptions", []]) == [41, "ok", {3: "quote"}]


def test_a_feed_that_does_not_answer_times_out_and_a_late_answer_is_skipped() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        remote = RemoteControl([theirs], quotes=False, timeout=0.2)
        with pytest.raises(TimeoutError):
            remote.readiness()
        # The feed answers the first call late, then the second one: the late answer
        # (id 1) is skipped, the second (id 2) returned.
        for call_id, result in [(1, [True, []]), (2, [False, ["late"]])]:
            body = msgspec.msgpack.encode([call_id, "ok", result])
            ours.sendall(struct.pack(">I", len(body)) + body)
        assert remote.readiness() == (False, ["late"])
        assert remote.latest_quotes() is None
