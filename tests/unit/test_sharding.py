"""ShardPlanner: placement of instruments on connections, and the per-socket deltas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.kite.sharding import (
    CapacityError,
    ShardPlanner,
    SubscriptionDelta,
    chunked,
    subscription_delta,
)
from alphapanda.modes import MODES


def _sizes(planner: ShardPlanner) -> list[int]:
    return [len(shard) for shard in planner.shards()]


def test_few_instruments_use_one_shard() -> None:
    planner = ShardPlanner(3, 3000)
    changed = planner.assign({t: "quote" for t in range(10)})
    assert changed == [0]
    assert _sizes(planner) == [10, 0, 0]


def test_seven_thousand_instruments_use_three_balanced_shards() -> None:
    planner = ShardPlanner(3, 3000)
    planner.assign({t: "full" for t in range(7000)})
    sizes = _sizes(planner)
    assert sizes == [2334, 2333, 2333]
    assert max(sizes) <= 3000


def test_over_capacity_names_the_numbers_and_changes_nothing() -> None:
    planner = ShardPlanner(3, 3000)
    planner.assign({1: "ltp"})
    with pytest.raises(CapacityError) as info:
        planner.assign({t: "ltp" for t in range(9001)})
    message = str(info.value)
    assert "9001" in message
    assert "9000" in message
    assert "3 connections" in message
    assert "3000" in message
    assert planner.current() == {1: "ltp"}


def test_unknown_mode_is_rejected() -> None:
    planner = ShardPlanner(3, 3000)
    with pytest.raises(ValueError, match="unknown mode 'depth'"):
        planner.assign({1: "depth"})
    assert planner.current() == {}


def test_placed_instruments_never_move_and_new_ones_go_to_least_loaded() -> None:
    planner = ShardPlanner(3, 100)
    planner.assign({t: "quote" for t in range(250)})
    before = planner.shards()
    # Remove 60 from shard 0 only; then add 30 new ones.
    removed = set(list(before[0])[:60])
    desired = {t: "quote" for t in range(250) if t not in removed}
    desired.update({t: "ltp" for t in range(1000, 1030)})
    changed = planner.assign(desired)
    after = planner.shards()
    for index, shard in enumerate(before):
        for token in shard:
            if token not in removed:
                assert token in after[index]
    new_on = {i for i, shard in enumerate(after) for t in shard if t >= 1000}
    assert new_on == {0}  # shard 0 became the least loaded
    assert changed == [0]


def test_mode_change_touches_only_its_shard() -> None:
    planner = ShardPlanner(3, 10)
    planner.assign({t: "quote" for t in range(25)})
    owner = next(i for i, shard in enumerate(planner.shards()) if 17 in shard)
    desired = {t: "quote" for t in range(25)}
    desired[17] = "full"
    assert planner.assign(desired) == [owner]
    assert planner.shard(owner)[17] == "full"


def test_growth_past_one_shard_opens_another() -> None:
    planner = ShardPlanner(3, 100)
    planner.assign({t: "quote" for t in range(100)})
    planner.assign({t: "quote" for t in range(101)})
    assert _sizes(planner) == [100, 1, 0]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.dictionaries(st.integers(0, 400), st.sampled_from(MODES), max_size=300),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_sets_is_placed_exactly_within_limits(
    steps: list[dict[int, str]],
) -> None:
    planner = ShardPlanner(3, 100)
    for desired in steps:
        planner.assign(desired)
        shards = planner.shards()
        assert planner.current() == desired
        assert all(len(shard) <= 100 for shard in shards)
        # Each instrument is on exactly one shard.
        assert sum(len(shard) for shard in shards) == len(desired)


def test_delta_from_nothing_subscribes_everything_with_modes() -> None:
    delta = subscription_delta({}, {3: "full", 1: "quote", 2: "full"})
    assert delta == SubscriptionDelta(
        subscribe=(1, 2, 3), unsubscribe=(), modes={"full": (2, 3), "quote": (1,)}
    )


def test_delta_sends_only_changes() -> None:
    sent = {1: "quote", 2: "full", 3: "ltp"}
    delta = subscription_delta(sent, {1: "quote", 2: "ltp", 4: "full"})
    assert delta.subscribe == (4,)
    assert delta.unsubscribe == (3,)
    assert delta.modes == {"full": (4,), "ltp": (2,)}
    assert subscription_delta(sent, sent).empty


def test_chunked() -> None:
    assert chunked(range(7), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunked([], 3) == []
    with pytest.raises(ValueError, match="chunk size"):
        chunked([1], 0)
