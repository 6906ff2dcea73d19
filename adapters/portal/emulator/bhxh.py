"""The emulator's BHXH reception portal: token, check-in and episode submission, as the references show them.

It demands exactly the wire of adapters.portal.bhxh_wire (form-urlencoded bodies, the three headers, the five
form fields, `loaiHoSo` 0 on the check-in path and 130 on the submission path) and answers in the portal's
shapes: HTTP 200 with `maKetQua` (and `thongDiep` naming the problem) for every answer it gives on purpose.
A JSON token request or a raw XML body is refused with `maKetQua` 205, the portal's code for malformed
parameters [GUIDE error table; our choice for these two shapes, I]; a bad login or session with 401;
an account sending for a facility it does not serve with 403.
Retransmissions: the `Idempotency-Key` header when the client sends one, else the digest of the document,
names a document; a second acceptance returns the first receipt and counts a duplicate.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

from aiohttp import web

from adapters.portal.bhxh_wire import (
    ACCEPTED,
    ACCEPTED_MESSAGE,
    BAD_PARAMETERS,
    CHECKIN_FILE_TYPE,
    CLAIM_FILE_TYPE,
    FORBIDDEN,
    FORM_CONTENT_TYPE,
    HEADER_ACCESS_TOKEN,
    HEADER_PASSWORD_HASH,
    HEADER_TOKEN_ID,
    MESSAGE,
    RECEIVED_AT,
    RECEIVED_AT_FORMAT,
    RESULT_CODE,
    SUBMIT_FORM_FIELDS,
    TOKEN_INVALID,
    TOKEN_KEY,
    TRANSACTION_ID,
    dotnet_utc,
)
from adapters.portal.emulator.state import BhxhEmulatorAccount, EmulatorState, transaction_id
from adapters.portal.emulator.validate import Rejection, check_checkin, check_envelope
from adapters.portal.wire import IDEMPOTENCY_HEADER, bhxh_password_hash

VIETNAM = timezone(timedelta(hours=7))
STATE = web.AppKey("bhxh_state", EmulatorState)


def _answer(code: str, message: str) -> web.Response:
    return web.json_response({RESULT_CODE: code, MESSAGE: message})


def _accounts(state: EmulatorState) -> dict[str, BhxhEmulatorAccount]:
    configured = state.config.bhxh_accounts or (BhxhEmulatorAccount(state.config.username, state.config.password),)
    return {account.username: account for account in configured}


async def _form(request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
    """The form fields of a form-urlencoded body; a Rejection naming what is wrong otherwise."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise Rejection(f"Lỗi sai định dạng tham số: the body must be {FORM_CONTENT_TYPE}"
                        f" ({', '.join(fields)}), not {request.content_type or 'untyped'}")
    posted = await request.post()
    form = {name: str(posted.get(name, "")).strip() for name in fields}
    missing = [name for name, value in form.items() if not value]
    if missing:
        raise Rejection(f"Lỗi sai định dạng tham số: missing {', '.join(missing)}")
    return form


async def bhxh_token(request: web.Request) -> web.Response:
    """POST token_path: a form username + UPPER(MD5(password)) gives an access token and an id token."""
    state = request.app[STATE]
    try:
        form = await _form(request, ("username", "password"))
    except Rejection as exc:
        return _answer(BAD_PARAMETERS, exc.reason)
    account = _accounts(state).get(form["username"])
    if account is None or form["password"] != bhxh_password_hash(account.password):
        return _answer(TOKEN_INVALID, "Sai tên đăng nhập hoặc mật khẩu")
    state.counters.logins += 1
    access, id_token = state.issue_token(), state.issue_token()
    expires = datetime.now(UTC) + timedelta(seconds=state.faults.token_ttl)
    return web.json_response({RESULT_CODE: ACCEPTED, TOKEN_KEY: {
        "access_token": access, "id_token": id_token, "token_type": "bearer", "username": account.username,
        "expires_in": dotnet_utc(expires)}})


def _checked_form(form: dict[str, str], file_type: str) -> bytes:
    if form["loaiHoSo"] != file_type:
        raise Rejection(f"Lỗi sai định dạng tham số: loaiHoSo must be {file_type} here, not {form['loaiHoSo']}")
    if not re.fullmatch(r"\d{2}", form["maTinh"]):
        raise Rejection("Lỗi sai định dạng tham số: maTinh must be the 2-digit province code")
    if len(form["maCSKCB"]) != 5:
        raise Rejection("Lỗi sai định dạng tham số: maCSKCB must be the 5-character facility code")
    try:
        return base64.b64decode(form["fileHSBase64"], validate=True)
    except (binascii.Error, ValueError):
        raise Rejection("Lỗi sai định dạng tham số: fileHSBase64 is not base64") from None


def _authorised(request: web.Request, state: EmulatorState, username: str) -> bool:
    """Whether the session headers (access token, id token, password hash) are good for this account."""
    headers = request.headers
    account = _accounts(state).get(username)
    return account is not None and state.token_valid(headers.get(HEADER_ACCESS_TOKEN, "")) \
        and state.token_valid(headers.get(HEADER_TOKEN_ID, "")) \
        and headers.get(HEADER_PASSWORD_HASH) == bhxh_password_hash(account.password)


def _document_key(request: web.Request, document: bytes, episodes: list[str], file_type: str) -> str:
    """What names this document for retransmissions: the client's Idempotency-Key, else its digest; a
    check-in's key is marked `XML0/`, since a check-in and the files of one version may share a key."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not key:
        key = f"{episodes[0]}:sha256:{hashlib.sha256(document).hexdigest()[:16]}"
    elif not any(key == episode or key.startswith(episode + ":") for episode in episodes):
        raise Rejection(f"{IDEMPOTENCY_HEADER} does not name an MA_LK of this document")
    return f"XML0/{key}" if file_type == CHECKIN_FILE_TYPE else key


def _receiver(file_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of the check-in path (loaiHoSo 0) or of the submission path (loaiHoSo 130)."""
    async def receive(request: web.Request) -> web.Response:
        state = request.app[STATE]
        try:
            form = await _form(request, SUBMIT_FORM_FIELDS)
        except Rejection as exc:
            state.counters.rejected += 1
            return _answer(BAD_PARAMETERS, exc.reason)
        if not _authorised(request, state, form["username"]):
            state.counters.token_refusals += 1
            return _answer(TOKEN_INVALID, "Token không hợp lệ hoặc đã hết hạn")
        account = _accounts(state)[form["username"]]
        if account.facilities and form["maCSKCB"] not in account.facilities:
            return _answer(FORBIDDEN, f"tài khoản {account.username} không được gửi cho cơ sở {form['maCSKCB']}")
        state.counters.received += 1
        try:
            document = _checked_form(form, file_type)
            check = check_checkin if file_type == CHECKIN_FILE_TYPE else check_envelope
            signed = check(document, state.config.cert_pem)
            if signed["facility"] != form["maCSKCB"]:
                raise Rejection(f"maCSKCB {form['maCSKCB']} is not the facility that signed ({signed['facility']})")
            key = _document_key(request, document, signed["episodes"], file_type)
        except Rejection as exc:
            state.counters.rejected += 1
            state.counters.signature_failures += int(exc.signature)
            return _answer(BAD_PARAMETERS, exc.reason)
        receipt = state.seen("bhxh", key)
        if receipt is None:
            receipt = state.accept("bhxh", key, {
                RESULT_CODE: ACCEPTED, TRANSACTION_ID: transaction_id("GD"),
                RECEIVED_AT: datetime.now(VIETNAM).strftime(RECEIVED_AT_FORMAT), MESSAGE: ACCEPTED_MESSAGE})
            state.bhxh_received.append({
                "key": key, "loaiHoSo": form["loaiHoSo"], "maTinh": form["maTinh"], "maCSKCB": form["maCSKCB"],
                "username": form["username"], "episodes": signed["episodes"], "files": signed["files"],
                TRANSACTION_ID: receipt[TRANSACTION_ID]})
        return web.json_response(receipt)
    return receive


def add_bhxh_routes(app: web.Application, state: EmulatorState, paths: tuple[str, str, str]) -> None:
    """Serve the BHXH portal's three calls on `paths` (token, check-in, submission)."""
    token_path, checkin_path, submit_path = paths
    app[STATE] = state
    app.router.add_post(token_path, bhxh_token)
    app.router.add_post(checkin_path, _receiver(CHECKIN_FILE_TYPE))
    app.router.add_post(submit_path, _receiver(CLAIM_FILE_TYPE))
