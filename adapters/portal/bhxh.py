"""Client of the BHXH reception portal: signed XML 130 envelopes (QĐ 130/4750/3176), see PORTAL_API.md.

Login: POST token_path with JSON `{"username", "password": UPPER(MD5(password))}`; the answer
`{"maKetQua": "200", "APIKey": {"access_token", "id_token", "expires_in"}}` gives the session. Each
envelope is POSTed raw (`application/xml`) with headers `accessToken`, `tokenId`, `passwordHash` and
`Idempotency-Key`; envelopes whose files are all of type CHECKIN go to checkin_path, others to submit_path.
The answer carries `maKetQua` ("200" accepted), `maGiaoDich`, `thoiGianTiepNhan` and `thongDiep`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lxml import etree

from adapters.portal.base import Receipt, Submission, TransientPortalError
from adapters.portal.http import AccessToken, ChannelConfig, HttpAnswer, PortalHttpChannel, TokenRejected
from adapters.portal.wire import BHXH_ACCEPTED, BHXH_TOKEN_INVALID, IDEMPOTENCY_HEADER, bhxh_password_hash

CHECKIN_FILE_TYPE = "CHECKIN"
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0


class BhxhConfig(ChannelConfig, Protocol):
    """What the BHXH client needs from its settings (gateway.config.BhxhChannelSettings provides it)."""

    @property
    def token_path(self) -> str: ...

    @property
    def checkin_path(self) -> str: ...

    @property
    def submit_path(self) -> str: ...


def _reason(answer: HttpAnswer) -> str:
    body = answer.body
    code = body.get("maKetQua")
    message = body.get("thongDiep") or body.get("message") or ""
    return f"maKetQua {code}: {message}".strip(": ") if code is not None else str(message or f"HTTP {answer.status}")


def is_checkin_envelope(xml: bytes) -> bool:
    """True when every file in the envelope is a check-in table, which the portal takes on its own path."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError:
        return False
    types = [(node.text or "").strip().upper() for node in root.iterfind(".//FILEHOSO/LOAIHOSO")]
    return bool(types) and all(kind == CHECKIN_FILE_TYPE for kind in types)


class BhxhChannel(PortalHttpChannel):
    """The BHXH XML 130 channel: one signed envelope per submission, one receipt per envelope."""

    def __init__(self, settings: BhxhConfig, *, name: str, on_response: Callable[[int], None] | None = None,
                 on_attempt: Callable[[float], None] | None = None) -> None:
        super().__init__(settings, name=name, on_response=on_response, on_attempt=on_attempt)
        self.bhxh = settings
        self._password_hash = bhxh_password_hash(settings.password.get_secret_value())

    async def _login(self) -> tuple[AccessToken, float]:
        answer = await self.post(self.bhxh.token_path, headers={},
                                 json_body={"username": self.bhxh.username, "password": self._password_hash})
        if answer.status == 429 or answer.status >= 500:
            self.raise_for_http(answer, f"login: {_reason(answer)}")
        api_key = answer.body.get("APIKey")
        if answer.status != 200 or str(answer.body.get("maKetQua")) != BHXH_ACCEPTED or not isinstance(api_key, dict):
            raise TransientPortalError(f"BHXH login refused: {_reason(answer)}", status=answer.status)
        try:
            lifetime = float(api_key.get("expires_in") or DEFAULT_TOKEN_LIFETIME_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        return AccessToken(str(api_key.get("access_token", "")), str(api_key.get("id_token", ""))), lifetime

    async def _submit_with_token(self, submission: Submission, token: AccessToken) -> Receipt:
        path = self.bhxh.checkin_path if is_checkin_envelope(submission.body) else self.bhxh.submit_path
        headers = {
            "accessToken": token.value,
            "tokenId": token.token_id,
            "passwordHash": self._password_hash,
            "Content-Type": "application/xml; charset=utf-8",
            IDEMPOTENCY_HEADER: submission.idempotency_key,
        }
        answer = await self.post(path, headers=headers, data=submission.body)
        code = str(answer.body.get("maKetQua", ""))
        if answer.status == 401 or code == BHXH_TOKEN_INVALID:
            raise TokenRejected()
        self.raise_for_http(answer, _reason(answer))
        return self.receipt_or_raise(answer, code_field="maKetQua", accepted_code=BHXH_ACCEPTED,
                                     id_field="maGiaoDich", time_field="thoiGianTiepNhan", reason=_reason(answer))
