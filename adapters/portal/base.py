"""The one interface every national-portal channel implements, and its outcome types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Submission:
    """A signed payload ready for one channel; `idempotency_key` is document id + version."""

    channel: str
    idempotency_key: str
    document_id: str
    version: int
    body: bytes = field(repr=False)
    content_type: str = "application/json"
    not_before: float = 0.0  # epoch seconds before which it is not sent (late charges may still come)
    withdraws: bool = False  # nothing to send: this version withdraws the older ones not sent yet
    # What the portal files it under, as the builder signed it, so a channel reads no XML to learn it:
    file_type: str = ""  # BHXH loaiHoSo kind ("0" a check-in, "130" an episode's files); "" read from the body
    facility_code: str = ""  # the facility whose account sends it (its MACSKCB); "" read from the body


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the portal answered for an accepted submission; archived by the store."""

    transaction_id: str
    received_at: str
    result_code: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class PortalError(Exception):
    """A submission that did not succeed; `reason` is the portal's own words or ours.

    `result_code` is the portal's own result code when it refused inside a 2xx answer (BHXH `maKetQua`),
    so that a signature failure and a data error are told apart without reading free text.
    """

    def __init__(self, reason: str, *, status: int | None = None, result_code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.result_code = result_code


class TransientPortalError(PortalError):
    """Worth retrying: 5xx, 429, timeouts, dropped connections, expired tokens."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 result_code: str = "") -> None:
        super().__init__(reason, status=status, result_code=result_code)
        self.retry_after = retry_after


class PermanentPortalError(PortalError):
    """Refused for good (4xx with a reason): the document goes to the dead-letter state."""


class PortalChannel(Protocol):
    """One national channel: submit a signed payload, get a receipt or a PortalError."""

    name: str

    async def submit(self, submission: Submission) -> Receipt: ...

    async def close(self) -> None: ...
