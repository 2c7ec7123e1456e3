"""The simulator's subscription book: Kite's client messages, applied without a socket."""

from __future__ import annotations

import json

import pytest

from alphapanda.kite.protocol import client_message, parse_text_message
from alphapanda.sim.subscriptions import SubscriptionBook

UNIVERSE = set(range(1, 101))


def errors_of(replies: list[str]) -> list[str]:
    messages = [parse_text_message(r) for r in replies]
    assert all(m.type == "error" for m in messages)
    return [str(m.data) for m in messages]


@pytest.fixture
def book() -> SubscriptionBook:
    book = SubscriptionBook(UNIVERSE, max_per_connection=10)
    book.open("c1")
    book.open("c2")
    return book


def test_subscribe_defaults_to_quote_and_mode_changes_it(book: SubscriptionBook) -> None:
    assert book.apply("c1", client_message("subscribe", [1, 2, 3])) == []
    assert book.modes_of("c1") == {1: "quote", 2: "quote", 3: "quote"}
    assert book.apply("c1", client_message("mode", [2], "full")) == []
    assert book.apply("c2", client_message("subscribe", [2])) == []
    assert book.subscribers(2) == {"c1": "full", "c2": "quote"}
    # Resubscribing keeps the chosen mode.
    assert book.apply("c1", client_message("subscribe", [2])) == []
    assert book.subscribers(2)["c1"] == "full"
    assert book.active_tokens() == [1, 2, 3]


def test_unsubscribe_and_close_release_instruments(book: SubscriptionBook) -> None:
    book.apply("c1", client_message("subscribe", [1, 2]))
    book.apply("c2", client_message("subscribe", [2]))
    book.apply("c1", client_message("unsubscribe", [1, 99]))
    assert book.active_tokens() == [2]
    book.close("c1")
    assert book.subscribers(2) == {"c2": "quote"}
    book.close("c2")
    assert book.active_tokens() == []
    assert book.snapshot() == {}


def test_unknown_tokens_are_reported_and_known_ones_applied(book: SubscriptionBook) -> None:
    errors = errors_of(book.apply("c1", client_message("subscribe", [5, 1000, 2000])))
    assert len(errors) == 1
    assert "1000" in errors[0]
    assert "2000" in errors[0]
    assert book.modes_of("c1") == {5: "quote"}


def test_limit_per_connection_refuses_the_whole_subscribe(book: SubscriptionBook) -> None:
    assert book.apply("c1", client_message("subscribe", list(range(1, 9)))) == []
    errors = errors_of(book.apply("c1", client_message("subscribe", [20, 21, 22])))
    assert "exceed 10" in errors[0]
    assert sorted(book.modes_of("c1")) == list(range(1, 9))
    assert book.apply("c1", client_message("subscribe", [20, 21])) == []
    assert len(book.modes_of("c1")) == 10


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"a": "subscribe"}',
        '{"a": "subscribe", "v": ["x"]}',
        '{"a": "subscribe", "v": [true]}',
        '{"a": "mode", "v": ["fast", [1]]}',
        '{"a": "mode", "v": ["full"]}',
        '{"a": "explode", "v": [1]}',
        "\udcff",
    ],
)
def test_malformed_messages_get_an_error_and_change_nothing(
    book: SubscriptionBook, text: str
) -> None:
    errors = errors_of(book.apply("c1", text))
    assert len(errors) == 1
    assert errors[0].startswith("invalid message")
    assert book.modes_of("c1") == {}


def test_mode_for_an_unsubscribed_token_is_an_error(book: SubscriptionBook) -> None:
    book.apply("c1", client_message("subscribe", [1]))
    errors = errors_of(book.apply("c1", json.dumps({"a": "mode", "v": ["ltp", [1, 7]]})))
    assert "7" in errors[0]
    assert book.modes_of("c1") == {1: "ltp"}
