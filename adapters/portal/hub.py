"""Client of the Ministry of Health data hub (QĐ 1551 PL02 §4, as amended by QĐ 2062), see PORTAL_API.md.

Login: POST login_path with JSON `{"username", "password"}`; the answer is `{"header": {version, success,
send_datetime, res_datetime, res_code, res_msg}, "data": {token, refresh_token, duration, role}}` and
only res_code CM_SUCCESS with a token is a session (duration in seconds).
Push: POST push_path with the message `{header, data, signature}` (built by gateway.hub_message), headers
`Authorization: Bearer <token>`, `service-type`, `Idempotency-Key`. The answer is `{"header": {version,
sender_id, receiver_id, txn_id, txn_type, res_code, res_msg, msg_type 102, msg_id, send_datetime,
ref_msg_id, res_datetime}, "data": {data_state, data_state_msg, message_check_ca, message_notify},
"signature"}`. HTTP 200 is not success by itself: each res_code is classed success, transient or permanent
by the table mappings/checkup/hub_result_codes.json (with its sources).

Batching (batch_size > 1, off by default because PL02 does not describe it): up to batch_size messages,
each signed on its own, go as one JSON array; the answer's `results` hold one answer per message, matched
by `header.ref_msg_id`, so each document is accepted or refused on its own.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any, Protocol

from adapters.portal.base import PermanentPortalError, PortalError, Receipt, Submission, TransientPortalError
from adapters.portal.http import AccessToken, ChannelConfig, HttpAnswer, PortalHttpChannel, TokenRejected
from adapters.portal.wire import IDEMPOTENCY_HEADER

DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0
LOGIN_SUCCESS = "CM_SUCCESS"


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


@cache
def result_codes() -> dict[str, Any]:
    """The hub's res_code table (data file with its public sources)."""
    text = resources.files("mappings.checkup").joinpath("hub_result_codes.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def result_class(code: str) -> str:
    """success, transient or permanent for a res_code (unknown codes: the table's unknown_class)."""
    table = result_codes()
    entry = table["codes"].get(code)
    return str(entry["class"]) if entry else str(table["unknown_class"])


def _header(body: dict[str, Any]) -> dict[str, Any]:
    header = body.get("header")
    return header if isinstance(header, dict) else {}


def _reason(answer: HttpAnswer) -> str:
    header = _header(answer.body)
    code, message = header.get("res_code"), header.get("res_msg") or answer.body.get("message")
    if code:
        return f"{code}: {message}" if message else str(code)
    return str(message or f"HTTP {answer.status}")


def _msg_id(submission: Submission) -> str:
    try:
        return str(json.loads(submission.body)["header"]["msg_id"])
    except (ValueError, KeyError, TypeError):
        return ""


def outcome(answer: HttpAnswer, msg_id: str) -> Receipt | PortalError:
    """What one push answer means: a Receipt, or the error its res_code (or HTTP status) says."""
    if answer.status == 429 or answer.status >= 500 or answer.status in (407, 408):
        return TransientPortalError(f"portal error {answer.status}: {_reason(answer)}", status=answer.status,
                                    retry_after=answer.retry_after)
    header = _header(answer.body)
    code = str(header.get("res_code") or "")
    kind = result_class(code) if code else "permanent"
    if not 200 <= answer.status < 300 and kind == "success":
        kind = "permanent"
    if kind == "transient":
        return TransientPortalError(f"hub: {_reason(answer)}", status=answer.status, result_code=code)
    if kind != "success":
        return PermanentPortalError(f"hub refused: {_reason(answer)}", status=answer.status, result_code=code)
    if msg_id and str(header.get("ref_msg_id") or msg_id) != msg_id:
        return TransientPortalError("hub answered for another message (ref_msg_id)", status=answer.status)
    transaction_id = str(header.get("txn_id") or "")
    if not transaction_id:
        return TransientPortalError("hub accepted without a transaction id (header.txn_id)", status=answer.status)
    return Receipt(transaction_id=transaction_id, received_at=str(header.get("res_datetime") or ""),
                   result_code=code, raw=answer.body)


class HubChannel(PortalHttpChannel):
    """The Ministry of Health hub channel: one signed message per submission, one receipt per message."""

    def __init__(self, settings: HubConfig, *, name: str, on_response: Callable[[int], None] | None = None,
                 on_attempt: Callable[[float], None] | None = None) -> None:
        super().__init__(settings, name=name, on_response=on_response, on_attempt=on_attempt)
        self.hub = settings

    def _headers(self, token: AccessToken) -> dict[str, str]:
        return {"Authorization": f"Bearer {token.value}", "service-type": self.hub.service_type,
                "Content-Type": "application/json", "Accept": "*/*"}

    async def _login(self) -> tuple[AccessToken, float]:
        answer = await self.post(self.hub.login_path, headers={"Accept": "*/*"}, json_body={
            "username": self.hub.username, "password": self.hub.password.get_secret_value()})
        if answer.status == 429 or answer.status >= 500:
            self.raise_for_http(answer, f"login: {_reason(answer)}")
        found = answer.body.get("data")
        data: dict[str, Any] = found if isinstance(found, dict) else {}
        token = data.get("token")
        if answer.status != 200 or _header(answer.body).get("res_code") != LOGIN_SUCCESS or not token:
            raise TransientPortalError(f"hub login refused: {_reason(answer)}", status=answer.status,
                                       result_code=str(_header(answer.body).get("res_code") or ""))
        try:
            lifetime = float(data.get("duration") or DEFAULT_TOKEN_LIFETIME_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        return AccessToken(str(token)), lifetime

    async def _submit_with_token(self, submission: Submission, token: AccessToken) -> Receipt:
        headers = {**self._headers(token), IDEMPOTENCY_HEADER: submission.idempotency_key}
        answer = await self.post(self.hub.push_path, headers=headers, data=submission.body)
        if answer.status == 401:
            raise TokenRejected()
        result = outcome(answer, _msg_id(submission))
        if isinstance(result, PortalError):
            raise result
        return result

    async def _push_batch(self, batch: list[Submission], token: AccessToken) -> HttpAnswer:
        answer = await self.post(self.hub.push_path, headers=self._headers(token),
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
        results = {str(_header(item).get("ref_msg_id")): item for item in answer.body.get("results", [])
                   if isinstance(item, dict)}
        outcomes: list[Receipt | PortalError] = []
        for submission in batch:
            result = results.get(_msg_id(submission))
            if result is None:
                outcomes.append(TransientPortalError("hub answered the batch without this message"))
                continue
            outcomes.append(outcome(HttpAnswer(answer.status, result, None), _msg_id(submission)))
        return outcomes

    async def submit_many(self, submissions: list[Submission]) -> list[Receipt | PortalError]:
        """Several messages per request when batch_size > 1; one outcome per submission, in order."""
        size = self.hub.batch_size
        if size <= 1:
            return await super().submit_many(submissions)
        batches = [submissions[start:start + size] for start in range(0, len(submissions), size)]
        answered = await asyncio.gather(*(self._submit_batch(batch) for batch in batches))
        return [result for outcomes in answered for result in outcomes]
