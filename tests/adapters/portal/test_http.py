"""Small rules of the shared HTTP client: Retry-After in both of its forms, and what each status means."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from aiohttp import FormData

from adapters.portal.base import PermanentPortalError, TransientPortalError
from adapters.portal.http import HttpAnswer, PortalHttpChannel, form_body, parse_retry_after
from gateway.config import HubChannelSettings

NOW = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)


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


@pytest.mark.parametrize("status, expected", [
    (200, None), (204, None),
    (400, PermanentPortalError), (404, PermanentPortalError), (422, PermanentPortalError),
    (407, TransientPortalError), (408, TransientPortalError), (429, TransientPortalError),
    (500, TransientPortalError), (502, TransientPortalError), (503, TransientPortalError),
])
def test_http_statuses_are_classified_for_the_pipeline(status: int, expected: type[Exception] | None) -> None:
    channel = PortalHttpChannel(HubChannelSettings(), name="moh_checkup")
    answer = HttpAnswer(status, {"message": "lý do của cổng"}, 5.0 if status == 429 else None)
    if expected is None:
        channel.raise_for_http(answer, "ok")
        return
    with pytest.raises(expected) as caught:
        channel.raise_for_http(answer, "lý do của cổng")
    assert caught.value.status == status and "lý do của cổng" in caught.value.reason
    if status == 429:
        assert caught.value.retry_after == 5.0


@pytest.mark.parametrize("form", [
    {"username": "bv01", "fileHSBase64": base64.b64encode(bytes(range(256)) * 40).decode()},
    {"username": "nguyễn văn a+b/c=d&e", "maTinh": "", "fileHSBase64": "QUJD+/=="},
    {"password": "p@ss word%", "fileHSBase64": "not base64: ê"},
])
def test_form_bodies_are_the_bytes_aiohttp_builds(form: dict[str, str]) -> None:
    expected, built = FormData(dict(form))(), form_body(form)
    assert (built._value, dict(built.headers)) == (expected._value, dict(expected.headers))
