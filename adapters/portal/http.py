"""What both portal channels share: one aiohttp session (CA bundle, proxy, timeout), a concurrency cap,
a cached access token with one transparent re-login, and the classification of every outcome.

A channel's `submit` makes ONE attempt; the pipeline owns the retry schedule. Outcomes:
HTTP 429 -> TransientPortalError(retry_after); 5xx, 407, 408, timeouts, refused or dropped connections ->
TransientPortalError; other 4xx or a rejecting result code -> PermanentPortalError with the portal's reason.
A refused login is transient too: it is the gateway's credentials, not the document, that are wrong.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote_plus

import aiohttp
import structlog
from aiohttp.payload import BytesPayload

from adapters.portal.base import PermanentPortalError, PortalError, Receipt, Submission, TransientPortalError

log = structlog.get_logger(__name__)
T = TypeVar("T")
TOKEN_REFRESH_MARGIN_SECONDS = 30.0
NO_ANSWER = 0
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class Secret(Protocol):
    """A password kept out of reprs and logs (pydantic's SecretStr provides it)."""

    def get_secret_value(self) -> str: ...


class ChannelConfig(Protocol):
    """What every channel needs from its settings (gateway.config.ChannelSettings provides it)."""

    @property
    def base_url(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def password(self) -> Secret: ...

    @property
    def timeout_seconds(self) -> float: ...

    @property
    def max_concurrency(self) -> int: ...

    @property
    def ca_bundle(self) -> Path | None: ...

    @property
    def proxy(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One HTTP answer from the portal: status, JSON body (empty when not JSON) and Retry-After."""

    status: int
    body: dict[str, Any]
    retry_after: float | None


def _quote_form_value(value: str) -> str:
    """quote_plus, byte for byte, without its per-byte Python loop over a base64 document (most of a form)."""
    if value.isascii() and not value.encode("ascii").translate(None, _BASE64_ALPHABET):
        return value.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")  # quote_plus's own escapes
    return quote_plus(value)


def form_body(form: Mapping[str, str]) -> BytesPayload:
    """The form-urlencoded body aiohttp would build from `form` (urlencode's bytes, the same Content-Type),
    at a fraction of its CPU: urllib quotes a signed document's 10 KB of base64 one byte at a time."""
    encoded = "&".join(f"{quote_plus(name)}={_quote_form_value(value)}" for name, value in form.items())
    return BytesPayload(encoded.encode(), content_type=FORM_CONTENT_TYPE)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def ssl_context(settings: ChannelConfig) -> ssl.SSLContext:
    """TLS trusting the system store plus the hospital's CA bundle (TLS-inspecting proxies need it)."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A portal session: the bearer/access token and, for BHXH, the id token that goes with it."""

    value: str
    token_id: str = ""


class TokenRejected(Exception):
    """The portal no longer accepts our access token: log in again and repeat the call once."""


class PortalHttpChannel:
    """Base of both channels: transport, token cache, outcome classification and the metric callbacks.

    `name` is the channel's name in logs and errors; `on_response` gets each HTTP status the portal answers
    (0: no answer at all) and `on_attempt` the duration in seconds of each submission attempt.
    """

    def __init__(self, settings: ChannelConfig, *, name: str, on_response: Callable[[int], None] | None = None,
                 on_attempt: Callable[[float], None] | None = None) -> None:
        self.name = name
        self.settings = settings
        self._on_response = on_response or (lambda status: None)
        self._on_attempt = on_attempt or (lambda seconds: None)
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._token: AccessToken | None = None
        self._token_expires_at = 0.0
        self._login_lock = asyncio.Lock()

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            connector = aiohttp.TCPConnector(ssl=ssl_context(self.settings), limit=self.settings.max_concurrency)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False)
        return self._session

    async def post(self, path: str, *, headers: dict[str, str], json_body: Any = None,
                   data: bytes | Mapping[str, str] | None = None) -> HttpAnswer:
        """One HTTP POST to the portal (a mapping as `data` goes form-urlencoded); no answer at all becomes
        a TransientPortalError."""
        url = self.settings.base_url.rstrip("/") + path
        try:
            async with self._client_session().post(url, headers=headers, json=json_body,
                                                   data=form_body(data) if isinstance(data, Mapping) else data,
                                                   proxy=self.settings.proxy or None) as response:
                text = await response.text()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._on_response(NO_ANSWER)
            raise TransientPortalError(f"no answer from {self.name} portal: {type(exc).__name__}") from None
        self._on_response(status)
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        return HttpAnswer(status, body if isinstance(body, dict) else {"value": body}, retry_after)

    def raise_for_http(self, answer: HttpAnswer, reason: str) -> None:
        """Raise the error an unsuccessful HTTP status means; return quietly on 2xx."""
        status = answer.status
        if 200 <= status < 300:
            return
        if status == 429:
            raise TransientPortalError(f"rate limited: {reason}", status=status, retry_after=answer.retry_after)
        if status >= 500 or status in (407, 408):  # 407: the hospital proxy, not the portal, refused
            raise TransientPortalError(f"portal error {status}: {reason}", status=status,
                                       retry_after=answer.retry_after)
        raise PermanentPortalError(reason or f"refused with HTTP {status}", status=status)

    def receipt_or_raise(self, answer: HttpAnswer, *, code_field: str, accepted_code: str, id_field: str,
                         time_field: str, reason: str) -> Receipt:
        """Read a 2xx answer: a Receipt when the result code accepts, else the error the code means."""
        code = str(answer.body.get(code_field, ""))
        if code != accepted_code:
            if code.startswith("5"):
                raise TransientPortalError(f"portal error: {reason}", status=answer.status, result_code=code)
            raise PermanentPortalError(reason, status=answer.status, result_code=code)
        transaction_id = str(answer.body.get(id_field) or "")
        if not transaction_id:
            raise TransientPortalError(f"portal accepted without a transaction id ({id_field})", status=answer.status)
        return Receipt(transaction_id=transaction_id, received_at=str(answer.body.get(time_field, "")),
                       result_code=code, raw=answer.body)

    async def _login(self) -> tuple[AccessToken, float]:
        """Log in and return (token, lifetime in seconds)."""
        raise NotImplementedError

    async def _submit_with_token(self, submission: Submission, token: AccessToken) -> Receipt:
        """Send one submission; raise TokenRejected when the portal refuses the token."""
        raise NotImplementedError

    async def _current_token(self) -> AccessToken:
        async with self._login_lock:
            if self._token is None or time.monotonic() >= self._token_expires_at:
                token, lifetime = await self._login()
                log.info("portal_login", channel=self.name, token_lifetime_seconds=lifetime)
                self._token = token
                margin = min(TOKEN_REFRESH_MARGIN_SECONDS, lifetime / 10)
                self._token_expires_at = time.monotonic() + max(0.0, lifetime - margin)
            return self._token

    def _forget_token(self, token: AccessToken) -> None:
        if self._token == token:
            self._token = None

    async def with_token(self, call: Callable[[AccessToken], Awaitable[T]]) -> T:
        """Run one portal call under the cap with a valid token, logging in again once if it was refused."""
        started = time.perf_counter()
        try:
            async with self._semaphore:
                token = await self._current_token()
                try:
                    return await call(token)
                except TokenRejected:
                    self._forget_token(token)
                    token = await self._current_token()
                    try:
                        return await call(token)
                    except TokenRejected:
                        raise TransientPortalError("portal refused a fresh access token") from None
        finally:
            self._on_attempt(time.perf_counter() - started)

    async def submit(self, submission: Submission) -> Receipt:
        """One attempt (plus one re-login when the token expired): a Receipt or a classified PortalError."""
        return await self.with_token(lambda token: self._submit_with_token(submission, token))

    async def _submit_as_value(self, submission: Submission) -> Receipt | PortalError:
        try:
            return await self.submit(submission)
        except PortalError as exc:
            return exc

    def outcome_of(self, answer: HttpAnswer, **fields: str) -> Receipt | PortalError:
        """receipt_or_raise as a value, for the items of a batch answer."""
        try:
            return self.receipt_or_raise(answer, **fields)
        except PortalError as exc:
            return exc

    async def submit_many(self, submissions: list[Submission]) -> list[Receipt | PortalError]:
        """Submit several documents concurrently under the cap; one outcome per submission, in order."""
        return list(await asyncio.gather(*(self._submit_as_value(item) for item in submissions)))

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
