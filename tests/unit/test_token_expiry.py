"""The 06:00 IST rule for Kite access tokens, across IST and UTC day boundaries."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.auth.expiry import IST, is_expired, seconds_left, token_expiry

UTC = dt.UTC


def ist(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=IST)


@pytest.mark.parametrize(
    ("issued", "expires"),
    [
        # Issued during the trading day: 06:00 IST the next day.
        (ist(2026, 11, 25, 9, 15), ist(2026, 11, 26, 6)),
        (ist(2026, 11, 25, 23, 59, 59), ist(2026, 11, 26, 6)),
        # At 06:00:00 sharp the day's flush has happened: next day.
        (ist(2026, 11, 25, 6, 0, 0), ist(2026, 11, 26, 6)),
        # Just after midnight IST, before 06:00: the flush later that same morning.
        (ist(2026, 11, 26, 0, 0, 1), ist(2026, 11, 26, 6)),
        (ist(2026, 11, 26, 5, 59, 59), ist(2026, 11, 26, 6)),
        # Month and year ends, a leap day.
        (ist(2026, 11, 30, 15, 30), ist(2026, 12, 1, 6)),
        (ist(2026, 12, 31, 8), ist(2027, 1, 1, 6)),
        (ist(2028, 2, 28, 10), ist(2028, 2, 29, 6)),
    ],
)
def test_expiry_in_ist(issued: dt.datetime, expires: dt.datetime) -> None:
    assert token_expiry(issued) == expires


def test_issue_time_given_in_utc_across_the_utc_midnight() -> None:
    # 2026-11-25 20:00 UTC is 2026-11-26 01:30 IST (before the flush): expires 06:00 IST
    # on the 26th, i.e. 00:30 UTC — even though the UTC calendar day is still the 25th.
    issued = dt.datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    assert token_expiry(issued) == dt.datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    # 2026-11-25 23:59 UTC = 26th 05:29 IST: the same flush.
    assert token_expiry(dt.datetime(2026, 11, 25, 23, 59, tzinfo=UTC)) == dt.datetime(
        2026, 11, 26, 0, 30, tzinfo=UTC
    )
    # 00:30 UTC = 06:00 IST exactly: the next day's flush.
    assert token_expiry(dt.datetime(2026, 11, 26, 0, 30, tzinfo=UTC)) == dt.datetime(
        2026, 11, 27, 0, 30, tzinfo=UTC
    )
    # 18:29 UTC = 23:59 IST on the same IST day: next morning.
    assert token_expiry(dt.datetime(2026, 11, 25, 18, 29, tzinfo=UTC)) == dt.datetime(
        2026, 11, 26, 0, 30, tzinfo=UTC
    )


def test_result_is_utc_and_other_offsets_agree() -> None:
    issued = ist(2026, 11, 25, 12)
    expiry = token_expiry(issued)
    assert expiry.utcoffset() == dt.timedelta(0)
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert token_expiry(issued.astimezone(new_york)) == expiry


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        token_expiry(dt.datetime(2026, 11, 25, 12))


def test_seconds_left_and_expired() -> None:
    expires = ist(2026, 11, 26, 6)
    assert seconds_left(expires, ist(2026, 11, 26, 5, 59)) == 60
    assert not is_expired(expires, ist(2026, 11, 26, 5, 59, 59))
    assert is_expired(expires, ist(2026, 11, 26, 6))
    assert seconds_left(expires, ist(2026, 11, 26, 6, 1)) == -60


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_expiry_is_the_first_0600_ist_after_issue(issued: dt.datetime) -> None:
    expiry = token_expiry(issued)
    local = expiry.astimezone(IST)
    assert (local.hour, local.minute, local.second, local.microsecond) == (6, 0, 0, 0)
    assert dt.timedelta(0) < expiry - issued <= dt.timedelta(days=1)
