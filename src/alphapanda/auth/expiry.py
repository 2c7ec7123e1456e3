"""When a Kite access token dies: the first 06:00 IST after it was issued. Pure.

Kite flushes every session daily at 06:00 IST (a regulatory requirement), which for a
token issued during the trading day means "06:00 IST the next day". A token issued in
the small hours (00:00–05:59 IST) dies at 06:00 the *same* calendar day in IST: that
flush is the next one to come. IST has no daylight saving, so a fixed +05:30 offset is
exact, and no timezone database is needed.
"""

from __future__ import annotations

import datetime as dt

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
FLUSH_TIME_IST = dt.time(6, 0)


def token_expiry(issued_at: dt.datetime) -> dt.datetime:
    """The expiry of a token issued at ``issued_at`` (tz-aware), in UTC.

    A token issued exactly at 06:00:00 IST lives until 06:00 IST the next day."""
    if issued_at.tzinfo is None or issued_at.utcoffset() is None:
        raise ValueError("issued_at must be timezone-aware")
    local = issued_at.astimezone(IST)
    flush_today = dt.datetime.combine(local.date(), FLUSH_TIME_IST, tzinfo=IST)
    expiry = flush_today if local < flush_today else flush_today + dt.timedelta(days=1)
    return expiry.astimezone(dt.UTC)


def seconds_left(expires_at: dt.datetime, now: dt.datetime) -> float:
    """Seconds until ``expires_at`` (negative once expired); both tz-aware."""
    return (expires_at - now).total_seconds()


def is_expired(expires_at: dt.datetime, now: dt.datetime) -> bool:
    """True from the expiry instant on."""
    return now >= expires_at
