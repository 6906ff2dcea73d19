"""The emulator's Ministry of Health hub: login and data-sync push answered in the QĐ 1551 PL02 §4 shapes.

A push is checked like the hub would: the header fields (msg_id = sender_id + YYMMDD + 32 hex, msg_type
101, send_datetime in Unix ms), the RSA/SHA-256 checksum over header and data, then the Base64 payload:
for sync_checkup the XML form against mappings/checkup/forms.json (checkup.py) and every XML signature
inside it (xmldsig.py); for sync_immunization a FHIR document Bundle. Refusals carry the hub's res_code:
CM_INVALID_REQUEST (HTTP 400), PS_DS_RSA_SIGNATURE_MISSING/INVALID and PS_DS_CA_SIGNATURE_MISSING/INVALID
(HTTP 200 with the failing code, which a client must not take for success).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from adapters.portal.emulator.checkup import check_form, unwrap_envelope
from adapters.portal.emulator.state import EmulatorState
from adapters.portal.emulator.validate import Rejection
from adapters.portal.emulator.xmldsig import SignatureProblem, verify_form
from adapters.portal.wire import IDEMPOTENCY_HEADER, hub_signing_input

HUB_VERSION = "1.0.3"
HUB_ID = "TDLBYT"
SUCCESS = "CM_SUCCESS"
INVALID = "CM_INVALID_REQUEST"
HEADER_FIELDS = ("version", "sender_id", "receiver_id", "txn_type", "msg_id", "msg_type", "data_type",
                 "send_datetime")
DATA_TYPES = {"sync_checkup": "xml/base64", "sync_immunization": "json/base64"}
MAX_BATCH = 100
VIETNAM = timezone(timedelta(hours=7))


class HubRefusal(Rejection):
    """A refusal with the hub's res_code and the HTTP status it comes with."""

    def __init__(self, code: str, reason: str, status: int = 200, signature: bool = False) -> None:
        super().__init__(reason, signature=signature)
        self.code = code
        self.status = status


@cache
def _hub_key() -> rsa.RSAPrivateKey:
    """The emulator's own key for the answer's checksum signature (one per process)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _answer_header(request_header: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    sender = str(request_header.get("sender_id", ""))
    day = datetime.now(VIETNAM).strftime("%y%m%d")
    return {"version": HUB_VERSION, "sender_id": str(request_header.get("receiver_id") or HUB_ID),
            "receiver_id": sender, "txn_id": f"DS-{sender}-{day}{uuid.uuid4().hex}",
            "txn_type": request_header.get("txn_type", ""), "res_code": code, "res_msg": message, "msg_type": "102",
            "msg_id": f"{HUB_ID}{day}{uuid.uuid4().hex}", "send_datetime": request_header.get("send_datetime"),
            "ref_msg_id": request_header.get("msg_id", ""), "res_datetime": _now_ms()}


def _answer(request_header: dict[str, Any], code: str, message: str, data: dict[str, Any]) -> dict[str, Any]:
    header = _answer_header(request_header, code, message)
    signed = base64.b64encode(_hub_key().sign(hub_signing_input(header, data), padding.PKCS1v15(),
                                              hashes.SHA256())).decode("ascii")
    return {"header": header, "data": data, "signature": signed}


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise HubRefusal(INVALID, "data is not valid Base64", 400) from None


def _check_header(header: dict[str, Any]) -> None:
    missing = [name for name in HEADER_FIELDS if header.get(name) in (None, "")]
    if missing:
        raise HubRefusal(INVALID, f"header is missing {', '.join(missing)}", 400)
    sender = str(header["sender_id"])
    if not re.fullmatch(r"\d{13}", sender):
        raise HubRefusal(INVALID, "header.sender_id must be the 13-digit facility id", 400)
    if not re.fullmatch(re.escape(sender) + r"\d{6}[0-9a-f]{32}", str(header["msg_id"])):
        raise HubRefusal(INVALID, "header.msg_id must be sender_id + YYMMDD + 32 hex characters", 400)
    if str(header["msg_type"]) != "101":
        raise HubRefusal(INVALID, "header.msg_type must be 101", 400)
    if not isinstance(header["send_datetime"], int) or len(str(header["send_datetime"])) != 13:
        raise HubRefusal(INVALID, "header.send_datetime must be Unix time in milliseconds (13 digits)", 400)
    txn_type = str(header["txn_type"])
    if txn_type not in DATA_TYPES:
        raise HubRefusal(INVALID, f"header.txn_type {txn_type!r} is not a known transaction type", 400)
    if header["data_type"] != DATA_TYPES[txn_type]:
        raise HubRefusal(INVALID, f"{txn_type} needs header.data_type {DATA_TYPES[txn_type]}", 400)


def _check_checksum(message: dict[str, Any], cert_pem: bytes | None, sorted_keys: bool) -> bytes:
    header, data, signature = message["header"], message.get("data"), message.get("signature")
    if isinstance(data, dict) and isinstance(data.get("file_content"), str):
        payload_text = data["file_content"]
    elif isinstance(data, str):
        payload_text = data
    else:
        raise HubRefusal(INVALID, "data must be Base64 text or {\"file_content\": Base64}", 400)
    if not isinstance(signature, str) or not signature.strip():
        raise HubRefusal("PS_DS_RSA_SIGNATURE_MISSING", "the message has no checksum signature", signature=True)
    if cert_pem is not None:
        key = x509.load_pem_x509_certificate(cert_pem).public_key()
        try:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(base64.b64decode(signature, validate=True), hub_signing_input(header, data, sorted_keys),
                       padding.PKCS1v15(), hashes.SHA256())
        except (AssertionError, InvalidSignature, binascii.Error, ValueError):
            raise HubRefusal("PS_DS_RSA_SIGNATURE_INVALID", "the checksum signature does not verify",
                             signature=True) from None
    return _b64(payload_text)


def _check_payload(txn_type: str, payload: bytes, cert_pem: bytes | None) -> tuple[str, dict[str, int]]:
    """The form's root (or "FHIR") and the XML signatures it holds per CKS_* element."""
    if txn_type == "sync_immunization":
        try:
            document = json.loads(payload)
        except ValueError:
            raise HubRefusal(INVALID, "data is not Base64 of JSON", 400) from None
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle" \
                or document.get("type") != "document":
            raise HubRefusal(INVALID, "sync_immunization data must be a FHIR document Bundle", 400)
        return "FHIR", {}
    try:
        envelope = etree.fromstring(payload, etree.XMLParser(resolve_entities=False, no_network=True)).tag \
            == "KHAMSUCKHOE"
    except etree.XMLSyntaxError:
        raise HubRefusal(INVALID, "data is not Base64 of a well-formed XML form", 400) from None
    try:
        root, _values = check_form(unwrap_envelope(payload) if envelope else payload)
    except Rejection as exc:
        raise HubRefusal(INVALID, exc.reason, 400) from None
    try:
        signed = verify_form(payload, cert_pem)
    except SignatureProblem as exc:
        raise HubRefusal("PS_DS_CA_SIGNATURE_INVALID", str(exc), signature=True) from None
    if not signed.get("CKS_BENH_VIEN"):
        raise HubRefusal("PS_DS_CA_SIGNATURE_MISSING", "CKS_BENH_VIEN holds no facility signature", signature=True)
    if envelope and not signed.get("CHUKYDONVI"):
        raise HubRefusal("PS_DS_CA_SIGNATURE_MISSING", "CHUKYDONVI holds no facility signature", signature=True)
    return root, signed


def check_message(message: Any, cert_pem: bytes | None, sorted_keys: bool = False) -> tuple[str, dict[str, int]]:
    """Check one parsed push message as the hub would: the form's root and its signatures, or HubRefusal."""
    header = message.get("header") if isinstance(message, dict) else None
    if not isinstance(header, dict) or not header:
        raise HubRefusal(INVALID, "the message must be a JSON object with a header object", 400)
    _check_header(header)
    payload = _check_checksum(message, cert_pem, sorted_keys)
    return _check_payload(str(header["txn_type"]), payload, cert_pem)


def outcome(state: EmulatorState, message: Any, idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
    """Check and record one message; the HTTP status and the hub's answer (the first one for a retransmission)."""
    state.counters.received += 1
    header = message.get("header") if isinstance(message, dict) else None
    header = header if isinstance(header, dict) else {}
    try:
        root, signed = check_message(message, state.config.cert_pem, state.config.hub_sorted_keys)
    except HubRefusal as exc:
        state.counters.rejected += 1
        state.counters.signature_failures += int(exc.signature)
        return exc.status, _answer(header, exc.code, exc.reason, {"data_state": "1", "data_state_msg": exc.reason})
    msg_id = str(header["msg_id"])
    previous = state.seen("hub", msg_id)
    if previous is not None:
        return 200, previous
    answer = _answer(header, SUCCESS, "Trạng thái request trả về mã thành công chung",
                     {"data_state": "0", "data_state_msg": "Data is received",
                      "message_check_ca": "Digitally signed XML data",
                      "message_notify": "Successfully inserted data to DATA LAKE"})
    state.accept("hub", msg_id, answer, shown_as=idempotency_key or msg_id)
    state.hub_forms[root] = state.hub_forms.get(root, 0) + 1
    for element, count in signed.items():
        state.hub_signatures[element] = state.hub_signatures.get(element, 0) + count
    return 200, answer


def _login_answer(code: str, message: str, data: dict[str, Any] | None, status: int) -> web.Response:
    now = _now_ms()
    header = {"version": HUB_VERSION, "success": code == SUCCESS, "send_datetime": now, "res_datetime": now,
              "res_code": code, "res_msg": message}
    return web.json_response({"header": header, "data": data or {}}, status=status)


async def login(request: web.Request, state: EmulatorState) -> web.Response:
    """Agent-account login: a token with its refresh token, lifetime in seconds and role."""
    try:
        body = await request.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or body.get("username") != state.config.username \
            or body.get("password") != state.config.password:
        return _login_answer("CM_AUTH_ACCOUNT_FAIL", "Sai mật khẩu hoặc username", None, 401)
    state.counters.logins += 1
    data = {"token": state.issue_token(), "refresh_token": uuid.uuid4().hex,
            "duration": int(state.faults.token_ttl), "role": "facility"}
    return _login_answer(SUCCESS, "Trạng thái request trả về mã thành công chung", data, 200)


async def push(request: web.Request, state: EmulatorState) -> web.Response:
    """Data-sync push: one signed message (or a JSON array of them), one answer per message."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not state.token_valid(token):
        state.counters.token_refusals += 1
        return _login_answer("CM_AUTH_ACCOUNT_FAIL", "Token hết hạn", None, 401)
    if request.headers.get("service-type") != state.config.service_type:
        return web.json_response(_answer({}, INVALID, f"service-type must be {state.config.service_type}", {}),
                                 status=400)
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    if isinstance(body, list):
        if not 1 <= len(body) <= MAX_BATCH:
            return web.json_response(_answer({}, INVALID, f"a batch holds 1 to {MAX_BATCH} messages", {}),
                                     status=400)
        return web.json_response({"results": [outcome(state, message, None)[1] for message in body]})
    status, answer = outcome(state, body, request.headers.get(IDEMPOTENCY_HEADER))
    return web.json_response(answer, status=status)
