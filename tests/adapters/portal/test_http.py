"""Small rules of the shared HTTP client: Retry-After in both of its forms."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.portal.http import parse_retry_after

NOW = datetime(2026, 11, 23, 8, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Mon, 23 Nov 2026 08:00:30 GMT", 30.0),
    ("Mon, 23 Nov 2026 07:59:00 GMT", 0.0),
    ("soon", None),
    ("", None),
    (None, None),
])
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
