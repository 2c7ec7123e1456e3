"""The request bodies of the control API: what a subscription change may contain, and the
defaults of the status document."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from alphapanda.api.models import (
    MAX_TOKENS_PER_REQUEST,
    StatusView,
    SubscribeRequest,
    UnsubscribeRequest,
)

pytestmark = pytest.mark.unit


def _error_locations(model: Any, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    return [error["loc"] for error in refused.value.errors()]


def test_a_subscribe_request_defaults_to_quote_mode() -> None:
    request = SubscribeRequest.model_validate({"tokens": [256265]})
    assert request.tokens == [256265] and request.mode == "quote"


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
def test_every_kite_mode_is_accepted(mode: str) -> None:
    assert SubscribeRequest.model_validate({"tokens": [1], "mode": mode}).mode == mode


@pytest.mark.parametrize("mode", ["snapshot", "FULL", "", None])
def test_any_other_mode_is_refused(mode: Any) -> None:
    assert _error_locations(SubscribeRequest, {"tokens": [1], "mode": mode}) == [("mode",)]


@pytest.mark.parametrize("token", [1, 2**32 - 1])
def test_tokens_span_the_unsigned_32_bit_range(token: int) -> None:
    assert SubscribeRequest.model_validate({"tokens": [token]}).tokens == [token]


@pytest.mark.parametrize("token", [0, -1, 2**32, "1", 1.0, True, None])
def test_a_token_outside_the_range_or_not_an_integer_is_refused(token: Any) -> None:
    for model in (SubscribeRequest, UnsubscribeRequest):
        assert _error_locations(model, {"tokens": [token]}) == [("tokens", 0)]


def test_a_request_names_at_least_one_and_at_most_the_maximum_of_tokens() -> None:
    assert _error_locations(SubscribeRequest, {"tokens": []}) == [("tokens",)]
    too_many = list(range(1, MAX_TOKENS_PER_REQUEST + 2))
    assert _error_locations(UnsubscribeRequest, {"tokens": too_many}) == [("tokens",)]
    at_most = list(range(1, MAX_TOKENS_PER_REQUEST + 1))
    assert len(UnsubscribeRequest.model_validate({"tokens": at_most}).tokens) == 9000


def test_unknown_fields_are_refused() -> None:
    assert _error_locations(SubscribeRequest, {"tokens": [1], "modes": "full"}) == [("modes",)]
    assert _error_locations(UnsubscribeRequest, {"tokens": [1], "mode": "full"}) == [("mode",)]


def test_requests_are_immutable() -> None:
    request = SubscribeRequest.model_validate({"tokens": [1]})
    with pytest.raises(ValidationError):
        request.mode = "full"  # type: ignore[misc]


def test_an_empty_status_document_has_every_section_with_unknown_figures() -> None:
    view = StatusView(source="redis", available=False)
    body = view.model_dump()
    assert body["buffer"] == {"depth": None, "capacity": None, "policy": None}
    assert body["wal"]["enabled"] is None and body["auth"]["token_valid"] is None
    assert (body["connections"], body["drops"], body["subscriptions"]) == ([], {}, {})


def test_status_documents_do_not_share_their_mutable_defaults() -> None:
    first = StatusView(source="feed", available=True)
    second = StatusView(source="feed", available=True)
    first.drops["x"] = 1
    first.buffer.depth = 5
    assert second.drops == {} and second.buffer.depth is None
