"""Facility signing: certificate and key from dev, PEM, PKCS#12 or a PKCS#11 token; XML-DSig and hub signatures."""
from __future__ import annotations

from gateway.metrics import Metrics
from gateway.signing.signer import Signer, SigningError, check_validity
from gateway.signing.sources import load_signer


def record_certificate_expiry(metrics: Metrics, signer: Signer) -> None:
    """Export the certificate's expiry so an alert fires weeks before the portals start refusing."""
    metrics.certificate_expiry.set(signer.not_after.timestamp())


__all__ = ["Signer", "SigningError", "check_validity", "load_signer", "record_certificate_expiry"]
