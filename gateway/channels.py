"""The registry of national channels: each one's name, settings section, client and builder, in one place.

A channel's name labels its store rows, metrics and logs. Adding a portal takes a client under
adapters/portal, its settings class as a section of gateway.config.PortalSettings, a builder that turns a
document into its signed body, and one line in CHANNELS; everything else reads from here.

The BHXH portal is two channels of one section: `bhxh_checkin` (XML0 check-ins) and `bhxh_xml130` (the
episode's files), so that the outbox sends a patient's check-in before the files queued after it and a newer
version of the files never supersedes a check-in. Both clients log in with each facility's own account.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.portal.base import PortalChannel, Submission
from adapters.portal.bhxh import BhxhAccount, BhxhChannel
from adapters.portal.bhxh_wire import CHECKIN_FILE_TYPE, CLAIM_FILE_TYPE
from adapters.portal.hub import HubChannel
from gateway.config import ChannelSettings, PortalSettings
from gateway.signing import Signer
from gateway.submissions import (
    DocumentParked,
    SubmissionBuildError,
    Withdrawal,
    bhxh_body,
    hub_body,
    xml0_checkin_body,
)
from mappings.model import Document, FacilityInfo

# (document, the version it builds on, the channel's settings, facility, signer, now, practitioners' signers
# by licence, the site mappings) -> the signed body; None: nothing for this channel; a Withdrawal: nothing,
# and the older versions not sent yet must not go either. DocumentParked: the episode waits for a mapping.
Builder = Callable[[Document, Document | None, Any, FacilityInfo, Signer, datetime, Mapping[str, Signer],
                    Mapping[str, Any] | None], bytes | Withdrawal | None]


class ChannelClient(Protocol):
    """How a channel client is made: its settings, its name and the metric callbacks."""

    def __call__(self, settings: Any, *, name: str, on_response: Callable[[int], None] | None = ...,
                 on_attempt: Callable[[float], None] | None = ...) -> PortalChannel: ...


def _no_hold(_settings: Any) -> float:
    return 0.0


def _claim_hold(settings: Any) -> float:
    """A finished episode's files wait `claim_delay_seconds` for charges posted after the discharge."""
    return float(settings.claim_delay_seconds)


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One national channel: `section` is its table under [portal] in the settings."""

    name: str
    section: str
    client: ChannelClient
    build: Builder
    content_type: str
    hold: Callable[[Any], float] = _no_hold  # seconds a new body waits before it is sent, from its settings
    facility_accounts: bool = False  # the client logs in with each facility's own account
    file_type: str = ""  # what its builder makes, as the portal files it (BHXH loaiHoSo): carried, never re-read


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("bhxh_checkin", "bhxh", BhxhChannel, xml0_checkin_body, "application/xml", facility_accounts=True,
                file_type=CHECKIN_FILE_TYPE),
    ChannelSpec("bhxh_xml130", "bhxh", BhxhChannel, bhxh_body, "application/xml", _claim_hold,
                facility_accounts=True, file_type=CLAIM_FILE_TYPE),
    ChannelSpec("moh_checkup", "hub", HubChannel, hub_body, "application/json"),
)


def channel_settings(portal: PortalSettings, spec: ChannelSpec) -> ChannelSettings:
    """The settings section of one channel."""
    settings: ChannelSettings = getattr(portal, spec.section)
    return settings


class ChannelMetrics(Protocol):
    """What a channel's client reports to: the gateway's Metrics, or the delivery process's stand-in."""

    portal_responses: Any
    submit_latency: Any


def open_channel(spec: ChannelSpec, settings: ChannelSettings, metrics: ChannelMetrics,
                 accounts: Sequence[BhxhAccount] = ()) -> PortalChannel:
    """A channel client reporting to the gateway's metrics under the channel's name."""
    extra: dict[str, Any] = {"accounts": accounts} if spec.facility_accounts else {}
    return spec.client(
        settings, name=spec.name,
        on_response=lambda status: metrics.portal_responses.labels(spec.name, str(status)).inc(),
        on_attempt=lambda seconds: metrics.submit_latency.labels(spec.name).observe(seconds), **extra)


def open_channels(portal: PortalSettings, metrics: ChannelMetrics,
                  accounts: Sequence[BhxhAccount] = ()) -> dict[str, PortalChannel]:
    """A client for every enabled channel, keyed by channel name as the pipeline looks them up."""
    return {spec.name: open_channel(spec, channel_settings(portal, spec), metrics, accounts)
            for spec in CHANNELS if channel_settings(portal, spec).enabled}


def submission_for(spec: ChannelSpec, document_id: str, version: int, body: bytes,
                   not_before: float = 0.0, facility: FacilityInfo | None = None) -> Submission:
    """A signed body as one channel's submission, keyed by document id and version; it carries what the
    portal files it under (the builder's file type, the facility whose code it signed) for the client."""
    facility_code = facility.bhxh_code.strip() if facility is not None and spec.facility_accounts else ""
    return Submission(channel=spec.name, idempotency_key=f"{document_id}:v{version}", document_id=document_id,
                      version=version, body=body, content_type=spec.content_type, not_before=not_before,
                      file_type=spec.file_type, facility_code=facility_code)


def build_submissions(document: Document, facility: FacilityInfo, signer: Signer, portal: PortalSettings,
                      now: datetime | None = None, practitioners: Mapping[str, Signer] | None = None,
                      previous: Document | None = None, site: Mapping[str, Any] | None = None) -> list[Submission]:
    """Sign one document for each enabled channel that has something for this version (compared with
    `previous`, the version it builds on), in CHANNELS order; a disabled channel gets nothing.

    `practitioners` are the doctors' own signers by licence (portal.hub.practitioner_signers), for the
    blocks of a health-check form they sign. A SigningError (certificate expired since start-up) is left to
    propagate: it is retryable. An episode the site mappings (`site`) cannot code yet raises DocumentParked,
    carrying what the other channels built.
    """
    now = now or datetime.now(UTC)
    built: list[Submission] = []
    waiting: DocumentParked | None = None
    for spec in CHANNELS:
        settings = channel_settings(portal, spec)
        if not settings.enabled:
            continue
        try:
            body = spec.build(document, previous, settings, facility, signer, now, practitioners or {}, site)
        except DocumentParked as wait:  # this channel waits; the others still send what they have
            waiting = DocumentParked(document, wait.codes, spec.name)
            continue
        except ValueError as exc:
            raise SubmissionBuildError(f"{document.kind} document {document.idempotency_key}: {exc}") from None
        if isinstance(body, Withdrawal):
            built.append(replace(submission_for(spec, document.document_id, document.version, b""), withdraws=True))
        elif body is not None:
            held = now.timestamp() + spec.hold(settings)  # late charges may still come
            built.append(submission_for(spec, document.document_id, document.version, body, held, facility))
    if waiting is not None:
        raise DocumentParked(document, waiting.codes, waiting.channel, built)
    return built
