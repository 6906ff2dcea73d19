"""Client of the Ministry of Health data hub: signed health-check messages (QĐ 1551), see PORTAL_API.md.

Login: POST login_path with JSON `{"username", "password"}`, answered by `{"access_token", "expires_in"}`.
Push: POST push_path with the message JSON `{header, data, signature}` (built by the gateway),
headers `Authorization: Bearer`, `service-type` and `Idempotency-Key`. The answer carries `code`
("200" accepted), `message`, `transaction_id` and `received_at`.

Batching (batch_size > 1, off by default because PORTAL_API.md does not describe it): up to batch_size
messages, each signed on its own, go as one JSON array to the same push path; the answer's `results` hold
one outcome per `msg_id`, so each document is accepted or refused on its own and a retried batch is
recognised message by message. The BHXH channel does not batch: several HOSO in one envelope share one
signature and one transaction id, so one bad record would refuse them all and a retry would resend the
accepted ones, and re-signing a combined envelope would need the key inside the adapter.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Protocol

from adapters.portal.base import PortalError, Receipt, Submission, TransientPortalError
from adapters.portal.http import AccessToken, ChannelConfig, HttpAnswer, PortalHttpChannel, TokenRejected
from adapters.portal.wire import HUB_ACCEPTED, IDEMPOTENCY_HEADER

DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0
RECEIPT_FIELDS = {"code_field": "code", "accepted_code": HUB_ACCEPTED, "id_field": "transaction_id",
                  "time_field": "received_at"}


class HubConfig(ChannelConfig, Protocol):
    """What the hub client needs from its settings (gateway.config.HubChannelSettings provides it)."""

    @property
    def login_path(self) -> str: ...

    @property
    def push_path(self) -> str: ...

    @property
    def service_type(self) -> str: ...

    @property
    def batch_size(self) -> int: ...


def _reason(answer: HttpAnswer) -> str:
    body = answer.body
    message = body.get("message") or body.get("error") or f"HTTP {answer.status}"
    code = body.get("code")
    return f"code {code}: {message}" if code is not None else str(message)


class HubChannel(PortalHttpChannel):
    """The Ministry of Health hub channel: one signed message per submission, one receipt per message."""

    def __init__(self, settings: HubConfig, *, name: str, on_response: Callable[[int], None] | None = None,
                 on_attempt: Callable[[float], None] | None = None) -> None:
        super().__init__(settings, name=name, on_response=on_response, on_attempt=on_attempt)
        self.hub = settings

    async def _login(self) -> tuple[AccessToken, float]:
        answer = await self.post(self.hub.login_path, headers={}, json_body={
            "username": self.hub.username, "password": self.hub.password.get_secret_value()})
        if answer.status == 429 or answer.status >= 500:
            self.raise_for_http(answer, f"login: {_reason(answer)}")
        token = answer.body.get("access_token")
        if answer.status != 200 or not token:
            raise TransientPortalError(f"hub login refused: {_reason(answer)}", status=answer.status)
        try:
            lifetime = float(answer.body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        return AccessToken(str(token)), lifetime

    async def _submit_with_token(self, submission: Submission, token: AccessToken) -> Receipt:
        headers = {
            "Authorization": f"Bearer {token.value}",
            "service-type": self.hub.service_type,
            "Content-Type": submission.content_type,
            IDEMPOTENCY_HEADER: submission.idempotency_key,
        }
        answer = await self.post(self.hub.push_path, headers=headers, data=submission.body)
        if answer.status == 401:
            raise TokenRejected()
        self.raise_for_http(answer, _reason(answer))
        return self.receipt_or_raise(answer, reason=_reason(answer), **RECEIPT_FIELDS)

    async def _push_batch(self, batch: list[Submission], token: AccessToken) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {token.value}", "service-type": self.hub.service_type,
                   "Content-Type": "application/json"}
        answer = await self.post(self.hub.push_path, headers=headers,
                                 data=b"[" + b",".join(item.body for item in batch) + b"]")
        if answer.status == 401:
            raise TokenRejected()
        self.raise_for_http(answer, _reason(answer))
        return answer

    async def _submit_batch(self, batch: list[Submission]) -> list[Receipt | PortalError]:
        try:
            answer = await self.with_token(lambda token: self._push_batch(batch, token))
        except PortalError as exc:
            return [exc] * len(batch)
        results = {str(item.get("msg_id")): item for item in answer.body.get("results", []) if isinstance(item, dict)}
        outcomes: list[Receipt | PortalError] = []
        for submission in batch:
            result = results.get(str(json.loads(submission.body)["header"]["msg_id"]))
            if result is None:
                outcomes.append(TransientPortalError("hub answered the batch without this message"))
                continue
            item = HttpAnswer(answer.status, result, None)
            outcomes.append(self.outcome_of(item, reason=_reason(item), **RECEIPT_FIELDS))
        return outcomes

    async def submit_many(self, submissions: list[Submission]) -> list[Receipt | PortalError]:
        """Several messages per request when batch_size > 1; one outcome per submission, in order."""
        size = self.hub.batch_size
        if size <= 1:
            return await super().submit_many(submissions)
        batches = [submissions[start:start + size] for start in range(0, len(submissions), size)]
        answered = await asyncio.gather(*(self._submit_batch(batch) for batch in batches))
        return [outcome for outcomes in answered for outcome in outcomes]
