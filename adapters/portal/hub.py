"""Client of the Ministry of Health data hub: signed health-check messages (QĐ 1551), see PORTAL_API.md.

Login: POST login_path with JSON `{"username", "password"}`, answered by `{"access_token", "expires_in"}`.
Push: POST push_path with the message JSON `{header, data, signature}` (built by gateway.submissions),
headers `Authorization: Bearer`, `service-type` and `Idempotency-Key`. The answer carries `code`
("200" accepted), `message`, `transaction_id` and `received_at`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.portal.base import Receipt, Submission, TransientPortalError
from adapters.portal.http import AccessToken, HttpAnswer, PortalHttpChannel, TokenRejected
from adapters.portal.wire import HUB_ACCEPTED, IDEMPOTENCY_HEADER

if TYPE_CHECKING:
    from gateway.config import HubChannelSettings
    from gateway.metrics import Metrics

DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0


def _reason(answer: HttpAnswer) -> str:
    body = answer.body
    message = body.get("message") or body.get("error") or f"HTTP {answer.status}"
    code = body.get("code")
    return f"code {code}: {message}" if code is not None else str(message)


class HubChannel(PortalHttpChannel):
    """The "moh_checkup" channel: one signed message per submission, one receipt per message."""

    name = "moh_checkup"

    def __init__(self, settings: HubChannelSettings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)
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
        return self.receipt_or_raise(answer, code_field="code", accepted_code=HUB_ACCEPTED,
                                     id_field="transaction_id", time_field="received_at", reason=_reason(answer))
