"""Unsafe settings `serve` refuses unless the site allows each explicitly in `[security]` (then it warns).

Each risk is something a careless installation would otherwise run with silently: anyone on the network
posting FHIR, the development signing certificate, portal credentials and signed records in clear, the
demo passwords, and the empty head code BHXH refuses. `demo` never asks: it is on 127.0.0.1 by design.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config import Settings

DEMO_PASSWORD = "demo"


@dataclass(frozen=True, slots=True)
class Risk:
    """One unsafe setting: what is wrong, and the `[security]` setting that would allow it."""

    allowed_by: str
    problem: str

    def refusal(self) -> str:
        """The config-error line: the problem and how to allow it on purpose."""
        return f"{self.problem} (set security.{self.allowed_by} = true to allow it)"

    def warning(self) -> str:
        """The line logged at every start while the site allows it."""
        return f"{self.problem}, allowed by security.{self.allowed_by}"


def is_loopback(host: str) -> bool:
    """Whether a listener or URL host is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def risks(settings: Settings) -> list[Risk]:
    """Every unsafe setting in force, allowed or not, one line each."""
    found: list[Risk] = []
    http = settings.http
    if http.enabled and not http.fhir_senders and not is_loopback(http.host):
        found.append(Risk("allow_anonymous_fhir", f"http.fhir_senders: empty, so anyone who reaches"
                          f" {http.host}:{http.port} may post FHIR resources"))
    signings = [("signing", settings.signing)] + [
        (f"facilities[{index}].signing", entry.signing) for index, entry in enumerate(settings.facilities)
        if entry.signing is not None]
    for name, signing in signings:
        if signing.source == "dev":
            found.append(Risk("allow_dev_certificate", f"{name}.source: \"dev\" signs with a self-signed"
                              " development certificate the national portals do not accept"))
    for name, channel in (("bhxh", settings.portal.bhxh), ("hub", settings.portal.hub)):
        if not channel.enabled:
            continue
        url = urlsplit(channel.base_url)
        if url.scheme != "https" and not is_loopback(url.hostname or ""):
            found.append(Risk("allow_plain_http_portal", f"portal.{name}.base_url: not https, so the password"
                              " hash and signed records would cross the network in clear"))
        if channel.password.get_secret_value() == DEMO_PASSWORD:
            found.append(Risk("allow_demo_passwords", f"portal.{name}.password: still the demo password"))
    for index, entry in enumerate(settings.facilities):
        password = entry.portal_password
        if settings.portal.bhxh.enabled and password is not None and password.get_secret_value() == DEMO_PASSWORD:
            found.append(Risk("allow_demo_passwords", f"facilities[{index}].portal_password: still the demo password"))
    heads = [(f"facilities[{index}]", entry.head_code) for index, entry in enumerate(settings.facilities)] or [
        ("facility", settings.facility.head_code)]
    for name, head_code in heads:
        if settings.portal.bhxh.enabled and not head_code.strip():
            found.append(Risk("allow_empty_head_code", f"{name}.head_code: empty, and BHXH refuses XML 130 records"
                              " without MA_TTDV"))
    return found


def refusals(settings: Settings) -> list[str]:
    """The config-error lines for every risk the site has not allowed."""
    allowed = settings.security.model_dump()
    return [risk.refusal() for risk in risks(settings) if not allowed[risk.allowed_by]]


def allowed_risks(settings: Settings) -> list[str]:
    """The warning lines for every risk the site has allowed on purpose."""
    allowed = settings.security.model_dump()
    return [risk.warning() for risk in risks(settings) if allowed[risk.allowed_by]]
