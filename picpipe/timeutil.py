"""ISO 8601 UTC timestamps, the one format every time field of a record uses."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_from_epoch(seconds: float) -> str:
    """`2024-01-31T08:00:00.123Z`: millisecond precision, so the strings sort as the times do."""
    dt = datetime.fromtimestamp(seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso_from_epoch(time.time())


def parse_time(text: str) -> datetime:
    """Read `2024-01-31`, `2024-01-31T08:00`, `...Z` or `...+08:00`; a time without zone is UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
