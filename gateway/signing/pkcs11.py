"""The facility key on a PKCS#11 hardware token (USB token, HSM, SoftHSM2): it never leaves the token."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error, UserAlreadyLoggedIn

from gateway.config import SigningSettings
from gateway.signing.signer import Signer, SigningError, check_validity
from gateway.signing.sources import load_certificate

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Library

_MECHANISMS = {"sha256": Mechanism.SHA256_RSA_PKCS}
_LIBRARIES: dict[str, Pkcs11Library] = {}
_LIBRARIES_LOCK = threading.Lock()


def open_library(module: Path) -> Pkcs11Library:
    """The PKCS#11 module, loaded and initialised once per process (a second C_Initialize would fail)."""
    with _LIBRARIES_LOCK:
        library = _LIBRARIES.get(str(module))
        if library is None:
            try:
                library = _LIBRARIES[str(module)] = pkcs11.lib(str(module))
            except (RuntimeError, OSError, PKCS11Error) as exc:
                raise SigningError(f"signing.pkcs11_module: cannot load {module}: {exc}") from None
        return library


class TokenRsaKey:
    """A private key object on an open token session, usable wherever an RSA key signs PKCS#1 v1.5."""

    def __init__(self, session: Any, key: Any) -> None:
        self._session = session
        self._key = key
        self._lock = threading.Lock()  # one PKCS#11 session must not sign from two threads at once

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes:
        """Sign on the token; only RSA PKCS#1 v1.5 with SHA-256 is offered (what both portals require)."""
        mechanism = _MECHANISMS.get(algorithm.name)
        if not isinstance(padding, PKCS1v15) or mechanism is None:
            raise SigningError(f"the token key signs only RSA PKCS#1 v1.5 with SHA-256, not {algorithm.name}")
        with self._lock:
            try:
                return bytes(self._key.sign(data, mechanism=mechanism))
            except PKCS11Error as exc:  # token removed, session closed, PIN locked: the operator's to fix
                raise SigningError(f"the token refused to sign ({type(exc).__name__})") from exc

    def close(self) -> None:
        """Close the token session (the token logs out when its last session closes)."""
        with self._lock:
            self._session.close()


def _token_certificate(session: Any, settings: SigningSettings) -> x509.Certificate:
    if settings.pkcs11_cert_file is not None:
        try:
            return load_certificate(settings.pkcs11_cert_file.read_bytes(), "pkcs11_cert_file")
        except OSError as exc:
            raise SigningError(f"signing.pkcs11_cert_file: cannot read it: {exc.strerror}") from None
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                      Attribute.LABEL: settings.pkcs11_key_label}))
    if not found:
        raise SigningError(f"no certificate labelled {settings.pkcs11_key_label!r} on the token;"
                           " set signing.pkcs11_cert_file")
    return load_certificate(bytes(found[0][Attribute.VALUE]), "pkcs11_key_label")


def load_pkcs11_signer(settings: SigningSettings) -> Signer:
    """Open the token with its PIN and find the facility key (and certificate) by label."""
    if settings.pkcs11_module is None:
        raise SigningError("signing.pkcs11_module is required for the pkcs11 signing source")
    if not settings.pkcs11_token_label or not settings.pkcs11_key_label:
        raise SigningError("signing.pkcs11_token_label and signing.pkcs11_key_label are required")
    pin = settings.pkcs11_pin.get_secret_value() if settings.pkcs11_pin is not None else None
    library = open_library(settings.pkcs11_module)
    try:
        token = library.get_token(token_label=settings.pkcs11_token_label)
        try:
            session = token.open(user_pin=pin)
        except UserAlreadyLoggedIn:  # this process already logged in; the login covers every new session
            session = token.open()
    except PKCS11Error as exc:
        raise SigningError(f"cannot open token {settings.pkcs11_token_label!r}: {type(exc).__name__}") from None
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.RSA,
                              label=settings.pkcs11_key_label)
        certificate = _token_certificate(session, settings)
        check_validity(certificate)
        return Signer(certificate, TokenRsaKey(session, key), "pkcs11")
    except PKCS11Error as exc:
        session.close()
        raise SigningError(f"no usable RSA private key labelled {settings.pkcs11_key_label!r} on token"
                           f" {settings.pkcs11_token_label!r}: {type(exc).__name__}") from None
    except SigningError:
        session.close()
        raise
