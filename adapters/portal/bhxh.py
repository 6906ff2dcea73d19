"""Client of the BHXH reception portal: signed XML0 check-ins and XML 130 episode files (see bhxh_wire.py).

Login: POST token_path, form `username` + `password` (upper-case MD5), answered by
`{"maKetQua": "200", "APIKey": {"access_token", "id_token", "expires_in": <UTC instant>, ...}}`.
Send: POST checkin_path (a `CHI_TIEU_TRANG_THAI_KCB` document, `loaiHoSo` 0) or submit_path (a
`GIAMDINHHS` envelope, `loaiHoSo` 130), headers `accessToken`, `tokenId`, `passwordHash`, form
`username, loaiHoSo, maTinh, maCSKCB, fileHSBase64`; the answer carries `maKetQua`, `maGiaoDich`,
`thoiGianTiepNhan`, `thongDiep`. Which one a submission is, and its facility (so its account and province),
come with the submission from the builder that signed them (gateway.channels), so no body is parsed again
here; a submission stored by an older version carries neither, and they are read from the root of its signed
document and the facility code inside it. Either way the portal files the document under what was signed.
The `Idempotency-Key` header is ours; the portal ignores it and the emulator counts retransmissions with it.

Several facilities behind one gateway each log in with their own account: one session per facility code.
"""
from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

from adapters.portal.base import PermanentPortalError, PortalError, Receipt, Submission, TransientPortalError
from adapters.portal.bhxh_wire import (
    ACCEPTED,
    CHECKIN_FILE_TYPE,
    FACILITY_ELEMENT,
    FILE_TYPE_OF_ROOT,
    HEADER_ACCESS_TOKEN,
    HEADER_PASSWORD_HASH,
    HEADER_TOKEN_ID,
    MESSAGE,
    RECEIVED_AT,
    RESULT_CODE,
    TOKEN_INVALID,
    TOKEN_KEY,
    TRANSACTION_ID,
    TRANSIENT_RESULT_CODES,
    token_lifetime,
)
from adapters.portal.http import AccessToken, ChannelConfig, HttpAnswer, PortalHttpChannel, TokenRejected
from adapters.portal.wire import IDEMPOTENCY_HEADER, bhxh_password_hash


class BhxhConfig(ChannelConfig, Protocol):
    """What the BHXH client needs from its settings (gateway.config.BhxhChannelSettings provides it)."""

    @property
    def token_path(self) -> str: ...

    @property
    def checkin_path(self) -> str: ...

    @property
    def submit_path(self) -> str: ...

    @property
    def checkin_file_type(self) -> str: ...

    @property
    def submit_file_type(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BhxhAccount:
    """One facility's portal account; `facility_code` empty: the account of whatever facility signed."""

    facility_code: str
    username: str
    password: str = field(repr=False)
    province_code: str = ""  # maTinh; empty: the first two characters of the facility code [QLBV]


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """What a signed BHXH document says about where it goes: its loaiHoSo and its facility code."""

    file_type: str
    facility_code: str


def read_signed_document(body: bytes) -> SignedDocument:
    """The kind and facility of a signed document, read from its root and facility element; ValueError if
    it is neither a check-in nor an episode envelope."""
    root_tag = ""
    try:
        for event, element in etree.iterparse(io.BytesIO(body), events=("start", "end"), resolve_entities=False,
                                              no_network=True):
            if not root_tag:
                root_tag = str(element.tag)
                if root_tag not in FILE_TYPE_OF_ROOT:
                    raise ValueError(f"root element {root_tag} is neither a check-in nor a GIAMDINHHS envelope")
            elif event == "end" and element.tag == FACILITY_ELEMENT[root_tag]:
                return SignedDocument(FILE_TYPE_OF_ROOT[root_tag], (element.text or "").strip())
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"the signed document is not well-formed XML: {exc}") from None
    raise ValueError(f"{root_tag or 'the document'} carries no {FACILITY_ELEMENT.get(root_tag, 'facility code')}")


def filed_as(submission: Submission) -> SignedDocument:
    """The kind and facility a submission's builder signed it as; read from the signed body only for one
    stored by an older version, which carries neither. ValueError for a kind the portal does not take."""
    if not (submission.file_type and submission.facility_code):
        return read_signed_document(submission.body)
    if submission.file_type not in FILE_TYPE_OF_ROOT.values():
        raise ValueError(f"file type {submission.file_type} is neither a check-in nor an episode's files")
    return SignedDocument(submission.file_type, submission.facility_code)


def _reason(answer: HttpAnswer) -> str:
    code = answer.body.get(RESULT_CODE)
    message = answer.body.get(MESSAGE) or answer.body.get("message") or ""
    return f"maKetQua {code}: {message}".strip(": ") if code is not None else str(message or f"HTTP {answer.status}")


class _FacilitySession(PortalHttpChannel):
    """One facility's session with the portal: its own login, token and password hash."""

    def __init__(self, settings: BhxhConfig, account: BhxhAccount, *, name: str,
                 on_response: Callable[[int], None] | None, on_attempt: Callable[[float], None] | None) -> None:
        super().__init__(settings, name=name, on_response=on_response, on_attempt=on_attempt)
        self.bhxh = settings
        self.account = account
        self._password_hash = bhxh_password_hash(account.password)

    async def _login(self) -> tuple[AccessToken, float]:
        answer = await self.post(self.bhxh.token_path, headers={},
                                 data={"username": self.account.username, "password": self._password_hash})
        if answer.status == 429 or answer.status >= 500:
            self.raise_for_http(answer, f"login: {_reason(answer)}")
        api_key = answer.body.get(TOKEN_KEY)
        if answer.status != 200 or str(answer.body.get(RESULT_CODE)) != ACCEPTED or not isinstance(api_key, dict) \
                or not api_key.get("access_token"):
            raise TransientPortalError(f"BHXH login refused: {_reason(answer)}", status=answer.status,
                                       result_code=str(answer.body.get(RESULT_CODE, "")))
        token = AccessToken(str(api_key["access_token"]), str(api_key.get("id_token", "")))
        return token, token_lifetime(api_key.get("expires_in"))

    async def send(self, submission: Submission, document: SignedDocument, token: AccessToken) -> Receipt:
        """POST one signed document as the portal's form; a Receipt, or the error its answer means."""
        checkin = document.file_type == CHECKIN_FILE_TYPE
        headers = {HEADER_ACCESS_TOKEN: token.value, HEADER_TOKEN_ID: token.token_id,
                   HEADER_PASSWORD_HASH: self._password_hash, IDEMPOTENCY_HEADER: submission.idempotency_key}
        form = {
            "username": self.account.username,
            "loaiHoSo": self.bhxh.checkin_file_type if checkin else self.bhxh.submit_file_type,
            "maTinh": self.account.province_code or document.facility_code[:2],
            "maCSKCB": document.facility_code,
            "fileHSBase64": base64.b64encode(submission.body).decode("ascii"),
        }
        answer = await self.post(self.bhxh.checkin_path if checkin else self.bhxh.submit_path,
                                 headers=headers, data=form)
        code = str(answer.body.get(RESULT_CODE, ""))
        if answer.status == 401 or code == TOKEN_INVALID:
            raise TokenRejected()
        self.raise_for_http(answer, _reason(answer))
        if code != ACCEPTED:
            if code in TRANSIENT_RESULT_CODES:
                raise TransientPortalError(_reason(answer), status=answer.status, result_code=code)
            raise PermanentPortalError(_reason(answer), status=answer.status, result_code=code)
        transaction_id = str(answer.body.get(TRANSACTION_ID) or "")
        if not transaction_id:
            raise TransientPortalError(f"portal accepted without a transaction id ({TRANSACTION_ID})",
                                       status=answer.status)
        return Receipt(transaction_id=transaction_id, received_at=str(answer.body.get(RECEIVED_AT, "")),
                       result_code=code, raw=answer.body)


class BhxhChannel:
    """A BHXH channel: one signed document per submission, one receipt per document; `accounts` holds each
    facility's account (none: the settings' username and password, for whatever facility signed)."""

    def __init__(self, settings: BhxhConfig, *, name: str, on_response: Callable[[int], None] | None = None,
                 on_attempt: Callable[[float], None] | None = None, accounts: Sequence[BhxhAccount] = ()) -> None:
        self.name = name
        self.settings = settings
        self._callbacks = (on_response, on_attempt)
        self._accounts = {account.facility_code: account for account in accounts} or {
            "": BhxhAccount("", settings.username, settings.password.get_secret_value())}
        self._sessions: dict[str, _FacilitySession] = {}

    def _session(self, facility_code: str) -> _FacilitySession:
        account = self._accounts.get(facility_code) or self._accounts.get("")
        if account is None:  # the settings lost the facility since signing: fix them, the document waits
            raise TransientPortalError(f"no BHXH portal account is configured for facility {facility_code}")
        session = self._sessions.get(account.facility_code)
        if session is None:
            on_response, on_attempt = self._callbacks
            session = self._sessions[account.facility_code] = _FacilitySession(
                self.settings, account, name=self.name, on_response=on_response, on_attempt=on_attempt)
        return session

    async def submit(self, submission: Submission) -> Receipt:
        """One attempt (plus one re-login when the token expired): a Receipt or a classified PortalError."""
        try:
            document = filed_as(submission)
        except ValueError as exc:
            raise PermanentPortalError(f"cannot send {submission.idempotency_key}: {exc}") from None
        session = self._session(document.facility_code)
        return await session.with_token(lambda token: session.send(submission, document, token))

    async def _submit_as_value(self, submission: Submission) -> Receipt | PortalError:
        try:
            return await self.submit(submission)
        except PortalError as exc:
            return exc

    async def submit_many(self, submissions: list[Submission]) -> list[Receipt | PortalError]:
        """Submit several documents concurrently (each facility session keeps its cap); outcomes in order."""
        return list(await asyncio.gather(*(self._submit_as_value(item) for item in submissions)))

    async def close(self) -> None:
        """Close every facility's HTTP session (idempotent)."""
        for session in self._sessions.values():
            await session.close()
