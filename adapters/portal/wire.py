"""Wire-level rules shared by the portal clients, the signer and the emulator (see PORTAL_API.md).

Idempotency travels with every submission in the HTTP header `Idempotency-Key` (document id + ":v" +
version) on both channels; the hub also carries it as `header.msg_id`, and the BHXH envelope carries the
episode's `MA_LK` inside XML1, which must equal the document id part of the key.

The hub message signature (QĐ 1551 PL02 §4.2 "checksum") signs the ASCII text
`UPPER(hex(SHA256(compact header))) + "." + UPPER(hex(SHA256(data)))`, where the compact header is
`json.dumps(header, separators=(",", ":"), ensure_ascii=False)` encoded as UTF-8 with the keys in the order
sent (or sorted, `portal.hub.checksum_key_order`), and `data` is the base64 text exactly as sent, or the
compact JSON of the `data` object when the hub wants `{"file_content": ...}` (`portal.hub.data_shape`).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

IDEMPOTENCY_HEADER = "Idempotency-Key"


def compact_json(value: Any, sort_keys: bool = False) -> bytes:
    """The JSON without whitespace (keys as given, or sorted), so signer and verifier hash the same bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False).encode("utf-8")


def hub_signing_input(header: dict[str, Any], data: str | dict[str, Any], sort_keys: bool = False) -> bytes:
    """The exact bytes the hub's RSA/SHA-256 message signature covers."""
    header_hash = hashlib.sha256(compact_json(header, sort_keys)).hexdigest().upper()
    data_bytes = data.encode("ascii") if isinstance(data, str) else compact_json(data, sort_keys)
    data_hash = hashlib.sha256(data_bytes).hexdigest().upper()
    return f"{header_hash}.{data_hash}".encode("ascii")


def bhxh_password_hash(password: str) -> str:
    """The BHXH portal wants the upper-case MD5 of the password, never the password itself."""
    return hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest().upper()
