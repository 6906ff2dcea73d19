"""The emulator's configuration, fault settings, issued tokens and counters (one object per app)."""
from __future__ import annotations

import random
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FAULT_FIELDS = ("fail_rate", "rate_limit_rate", "retry_after", "slow_rate", "slow_seconds", "drop_rate", "token_ttl")


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, by share of API calls: 500s, 429s, slow answers, dropped connections, token lifetime."""

    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    drop_rate: float = 0.0
    token_ttl: float = 3600.0

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with some fields changed; unknown names or bad values raise ValueError."""
        unknown = set(changes) - set(FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        values = {name: float(value) for name, value in changes.items()}
        for name, value in values.items():
            if name.endswith("_rate") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
        return replace(self, **values)


@dataclass(frozen=True, slots=True)
class BhxhEmulatorAccount:
    """An account the emulated BHXH portal knows; `facilities` empty: it may send for any facility code."""

    username: str
    password: str
    facilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulator is started; `cert_pem` is the facility certificate signatures must verify against."""

    host: str = "127.0.0.1"
    port: int = 8090
    cert_pem: bytes | None = None
    username: str = "demo"
    password: str = "demo"
    service_type: str = "100"
    hub_sorted_keys: bool = False  # the hub checksum hashes the header with sorted keys (portal.hub.checksum_key_order)
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    bhxh_accounts: tuple[BhxhEmulatorAccount, ...] = ()  # empty: username/password, for any facility


@dataclass(slots=True)
class Counters:
    """What `GET /_emulator/stats` reports."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    signature_failures: int = 0
    logins: int = 0
    token_refusals: int = 0
    server_errors: int = 0
    rate_limited: int = 0
    slowed: int = 0
    dropped: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class EmulatorState:
    """Mutable state of one emulator: faults, tokens, receipts by idempotency key, counters."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.random = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        """Forget everything received and restore the start-up faults."""
        self.faults = self.config.faults
        self.counters = Counters()
        self.tokens: dict[str, float] = {}
        self.receipts: dict[tuple[str, str], dict[str, Any]] = {}
        self.accepted_keys: list[str] = []
        self.bhxh_received: list[dict[str, Any]] = []  # each BHXH document accepted, in order, with its form
        self.hub_forms: dict[str, int] = {}  # accepted hub documents by form root (or FHIR)
        self.hub_signatures: dict[str, int] = {}  # verified XML signatures in accepted forms, by CKS_* element

    def draw(self, rate: float) -> bool:
        """True with probability `rate` (seeded, so a run with --seed repeats its fault pattern)."""
        return rate > 0 and self.random.random() < rate

    def issue_token(self) -> str:
        """A new opaque token valid for token_ttl seconds."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.faults.token_ttl
        return token

    def token_valid(self, token: str) -> bool:
        """Whether a token was issued and has neither expired nor been revoked by the token-expiry fault."""
        expires = self.tokens.get(token)
        return expires is not None and time.monotonic() < expires

    def expire_tokens(self) -> None:
        """The token-expiry fault: every token issued so far stops working."""
        self.tokens.clear()

    def seen(self, channel: str, key: str) -> dict[str, Any] | None:
        """The receipt already given for this idempotency key, counting the retransmission."""
        receipt = self.receipts.get((channel, key))
        if receipt is not None:
            self.counters.duplicates += 1
        return receipt

    def accept(self, channel: str, key: str, receipt: dict[str, Any], *, shown_as: str | None = None) -> dict[str, Any]:
        """Record a first-time acceptance and its receipt; `shown_as` is the key listed in the stats."""
        self.receipts[(channel, key)] = receipt
        self.accepted_keys.append(shown_as or key)
        self.counters.accepted += 1
        return receipt

    def stats(self) -> dict[str, Any]:
        """Counters plus accepted keys and current faults, as JSON-ready data."""
        counters = asdict(self.counters)
        return {**counters, "accepted_keys": list(self.accepted_keys), "bhxh": list(self.bhxh_received),
                "faults": asdict(self.faults),
                "hub_forms": dict(self.hub_forms), "hub_signatures": dict(self.hub_signatures),
                "verifies_against_configured_cert": self.config.cert_pem is not None}


def transaction_id(prefix: str) -> str:
    """A portal-style transaction id, unique per acceptance."""
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"

