"""AES-256-GCM for payloads at rest, and HMAC-SHA256 for lookups of personal values, both under the store key.

A copied database file or backup then reveals no health data, and its lookup columns (patient keys, content
digests) cannot be brute-forced from the small space of citizen ids without the key: a bare SHA-256 of a
12-digit CCCD falls in a fraction of a second.

Payloads are compressed before they are sealed (FHIR JSON and signed XML shrink to a fifth or so; after
encryption nothing would). A sealed payload starts with a format byte, bound into the authentication, so
rows sealed before compression still open: they are the format-less nonce || ciphertext.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import StoreSettings
from gateway.files import write_private
from gateway.logs import get_logger

log = get_logger(__name__)
NONCE_BYTES = 12
LOOKUP_KEY_INFO = b"healthbook-gateway identifier lookups v1"
COMPRESSED = b"\x01"  # format byte: zlib, then AES-GCM over it with the format byte in the associated data
COMPRESSION_LEVEL = 6


class EncryptionKeyError(Exception):
    """The configured payload key is missing or malformed."""


class PayloadCipher:
    """Seals and opens payloads; the associated data binds a ciphertext to its table and row identity.

    Its lookup key is derived from the same key (HKDF, its own label), so it is kept, backed up and given
    exactly like the payload key, and knowing one lookup digest reveals neither key.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise EncryptionKeyError("store encryption key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(key)
        self._lookup_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LOOKUP_KEY_INFO).derive(key)

    def lookup_digest(self, value: str) -> str:
        """A keyed one-way digest (HMAC-SHA256) to find rows by a personal value without storing a guessable hash."""
        return hmac.new(self._lookup_key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Compress, then encrypt: format byte || nonce || ciphertext."""
        nonce = os.urandom(NONCE_BYTES)
        compressed = zlib.compress(plaintext, COMPRESSION_LEVEL)
        return COMPRESSED + nonce + self._aead.encrypt(nonce, compressed, associated + COMPRESSED)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """The plaintext of a payload sealed by this gateway, compressed or (an older row) not."""
        if sealed[:1] == COMPRESSED:
            nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
            try:
                return zlib.decompress(self._aead.decrypt(nonce, body, associated + COMPRESSED))
            except InvalidTag:  # an older row whose random nonce happens to start with the format byte
                pass
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(f"{origin}: not valid base64") from None
    if len(key) != 32:
        raise EncryptionKeyError(f"{origin}: must decode to 32 bytes, got {len(key)}")
    return key


def load_cipher(settings: StoreSettings) -> PayloadCipher:
    """Key from the setting, then the key file, else a new key file beside the database (warned)."""
    if settings.encryption_key is not None:
        return PayloadCipher(_decode_key(settings.encryption_key.get_secret_value(), "store.encryption_key"))
    key_file = key_file_path(settings)
    if key_file.exists():
        return PayloadCipher(_decode_key(key_file.read_text(encoding="ascii"), f"store.encryption_key_file {key_file}"))
    if settings.encryption_key_file is not None:
        raise EncryptionKeyError(f"store.encryption_key_file {key_file}: not found")
    write_private(key_file, base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n", exclusive=True)
    log.warning("store_key_generated", key_file=str(key_file),
                advice="back this file up apart from the database; without it stored payloads cannot be read")
    return load_cipher(settings)


def key_file_path(settings: StoreSettings) -> Path:
    """Where the payload key lives when it is not given directly."""
    return settings.encryption_key_file or settings.path.parent / "store.key"


def check_key_settings(settings: StoreSettings) -> None:
    """Raise EncryptionKeyError for a configured key that start-up would refuse; never creates a key."""
    if settings.encryption_key is not None:
        _decode_key(settings.encryption_key.get_secret_value(), "store.encryption_key")
        return
    key_file = key_file_path(settings)
    if key_file.exists():
        _decode_key(key_file.read_text(encoding="ascii"), f"store.encryption_key_file {key_file}")
    elif settings.encryption_key_file is not None:
        raise EncryptionKeyError(f"store.encryption_key_file {key_file}: not found")
