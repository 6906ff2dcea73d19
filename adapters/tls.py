"""TLS contexts for the listeners, with optional client-certificate verification."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol


class ListenerTls(Protocol):
    """What a listener's TLS needs from its settings (gateway.config.TlsSettings provides it)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def cert_file(self) -> Path | None: ...

    @property
    def key_file(self) -> Path | None: ...

    @property
    def client_ca_file(self) -> Path | None: ...

    @property
    def require_client_cert(self) -> bool: ...


def server_ssl_context(tls: ListenerTls) -> ssl.SSLContext | None:
    """A server context from the settings, or None when TLS is off."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def peer_common_name(peercert: dict | None) -> str:
    """The subject CN of a verified client certificate, or "" when there is none."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
