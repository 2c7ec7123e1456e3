"""The ledger identity holds under any sequence of legal moves; illegal moves raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.pipeline.accounting import STAGES, Accounting, AccountingError

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "accept",
                "recover",
                "take",
                "produce",
                "ack",
                "spool_from_encoding",
                "spool_failed",
                "replay",
                "replay_failed",
                "drop",
                "drop_unreceived",
            ]
        ),
        st.integers(min_value=0, max_value=50),
        st.sampled_from(STAGES),
    ),
    max_size=200,
)


@given(EVENTS)
def test_identity_holds_after_every_event(events: list[tuple[str, int, str]]) -> None:
    acct = Accounting()
    # An independent model: where each tick is.
    model = dict.fromkeys(STAGES, 0)
    model_in = model_out = 0
    moves = {
        "take": ("buffered", "encoding"),
        "produce": ("encoding", "awaiting_ack"),
        "spool_from_encoding": ("encoding", "spooled"),
        "spool_failed": ("awaiting_ack", "spooled"),
        "replay": ("spooled", "awaiting_ack"),
        "replay_failed": ("awaiting_ack", "spooled"),
    }
    for name, n, stage in events:
        if name == "accept":
            acct.accept(n)
            model["buffered"] += n
            model_in += n
        elif name == "recover":
            acct.recover(n)
            model["spooled"] += n
            model_in += n
        elif name == "drop_unreceived":
            acct.drop_unreceived("shutdown", n)
            model_in += n
            model_out += n
        elif name in ("ack", "drop"):
            source = "awaiting_ack" if name == "ack" else stage
            if n > model[source]:
                with pytest.raises(AccountingError):
                    acct.ack(n) if name == "ack" else acct.drop(stage, "x", n)
                continue
            acct.ack(n) if name == "ack" else acct.drop(stage, "x", n)
            model[source] -= n
            model_out += n
        else:
            source, target = moves[name]
            if n > model[source]:
                with pytest.raises(AccountingError):
                    getattr(acct, name)(n)
                continue
            getattr(acct, name)(n)
            model[source] -= n
            model[target] += n
        assert acct.imbalance() == 0
        assert acct.received == model_in
        assert acct.published + acct.dropped_total == model_out
        assert {s: getattr(acct, s) for s in STAGES} == model


def test_samples_expose_identity_terms() -> None:
    acct = Accounting()
    acct.accept(10)
    acct.take(10)
    acct.produce(6)
    acct.spool_from_encoding(3)
    acct.drop("encoding", "malformed", 1)
    acct.ack(5)
    figures = {(s.name, s.labels): s.value for s in acct.samples()}
    assert figures[("ticks_received_total", ())] == 10
    assert figures[("ticks_recovered_total", ())] == 0
    assert figures[("ticks_published_total", ())] == 5
    assert figures[("ticks_dropped_total", (("reason", "malformed"),))] == 1
    assert figures[("ticks_spooled", ())] == 3
    assert figures[("ticks_in_flight", (("stage", "awaiting_ack"),))] == 1
    assert figures[("ticks_unaccounted", ())] == 0


def test_unknown_stage_rejected() -> None:
    with pytest.raises(AccountingError):
        Accounting().drop("nowhere", "x", 1)
