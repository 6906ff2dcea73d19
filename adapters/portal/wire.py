"""Wire-level rules shared by the portal clients, the signer and the emulator (see PORTAL_API.md).

Idempotency travels with every submission in the HTTP header `Idempotency-Key` (document id + ":v" +
version) on both channels; the hub also carries it as `header.msg_id`, and the BHXH envelope carries the
episode's `MA_LK` inside XML1, which must equal the document id part of the key.

The hub message signature signs the ASCII text
`UPPER(hex(SHA256(compact header))) + "." + UPPER(hex(SHA256(data)))`, where the compact header is
`json.dumps(header, separators=(",", ":"), sort_keys=True, ensure_ascii=False)` encoded as UTF-8 and
`data` is the base64 text exactly as sent.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

IDEMPOTENCY_HEADER = "Idempotency-Key"
HUB_ACCEPTED = "200"


def compact_json(value: Any) -> bytes:
    """One canonical byte form of a JSON header, so signer and verifier hash the same bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def hub_signing_input(header: dict[str, Any], data_b64: str) -> bytes:
    """The exact bytes the hub's RSA/SHA-256 message signature covers."""
    header_hash = hashlib.sha256(compact_json(header)).hexdigest().upper()
    data_hash = hashlib.sha256(data_b64.encode("ascii")).hexdigest().upper()
    return f"{header_hash}.{data_hash}".encode("ascii")


def bhxh_password_hash(password: str) -> str:
    """The BHXH portal wants the upper-case MD5 of the password, never the password itself."""
    return hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest().upper()
