"""The registry of national channels: each one's name, settings section, client and builder, in one place.

A channel's name labels its store rows, metrics and logs. Adding a portal takes a client under
adapters/portal, its settings class as a section of gateway.config.PortalSettings, a builder that turns a
document into its signed body, and one line in CHANNELS; everything else reads from here.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.portal.base import PortalChannel, Submission
from adapters.portal.bhxh import BhxhChannel
from adapters.portal.hub import HubChannel
from gateway.config import ChannelSettings, PortalSettings
from gateway.metrics import Metrics
from gateway.signing import Signer
from gateway.submissions import DocumentParked, SubmissionBuildError, bhxh_body, hub_body
from mappings.model import Document, FacilityInfo

# (document, the channel's settings, facility, signer, now, site mappings) -> the signed body, or None: not for
# this channel
Builder = Callable[[Document, Any, FacilityInfo, Signer, datetime, Mapping[str, Any] | None], bytes | None]


class ChannelClient(Protocol):
    """How a channel client is made: its settings, its name and the metric callbacks."""

    def __call__(self, settings: Any, *, name: str, on_response: Callable[[int], None] | None = ...,
                 on_attempt: Callable[[float], None] | None = ...) -> PortalChannel: ...


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One national channel: `section` is its table under [portal] in the settings."""

    name: str
    section: str
    client: ChannelClient
    build: Builder
    content_type: str


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("bhxh_xml130", "bhxh", BhxhChannel, bhxh_body, "application/xml"),
    ChannelSpec("moh_checkup", "hub", HubChannel, hub_body, "application/json"),
)


def channel_settings(portal: PortalSettings, spec: ChannelSpec) -> ChannelSettings:
    """The settings section of one channel."""
    settings: ChannelSettings = getattr(portal, spec.section)
    return settings


def open_channel(spec: ChannelSpec, settings: ChannelSettings, metrics: Metrics) -> PortalChannel:
    """A channel client reporting to the gateway's metrics under the channel's name."""
    return spec.client(
        settings, name=spec.name,
        on_response=lambda status: metrics.portal_responses.labels(spec.name, str(status)).inc(),
        on_attempt=lambda seconds: metrics.submit_latency.labels(spec.name).observe(seconds))


def open_channels(portal: PortalSettings, metrics: Metrics) -> dict[str, PortalChannel]:
    """A client for every enabled channel, keyed by channel name as the pipeline looks them up."""
    return {spec.name: open_channel(spec, channel_settings(portal, spec), metrics)
            for spec in CHANNELS if channel_settings(portal, spec).enabled}


def submission_for(spec: ChannelSpec, document_id: str, version: int, body: bytes) -> Submission:
    """A signed body as one channel's submission, keyed by document id and version."""
    return Submission(channel=spec.name, idempotency_key=f"{document_id}:v{version}", document_id=document_id,
                      version=version, body=body, content_type=spec.content_type)


def build_submissions(document: Document, facility: FacilityInfo, signer: Signer, portal: PortalSettings,
                      now: datetime | None = None, site: Mapping[str, Any] | None = None) -> list[Submission]:
    """Sign one document for each enabled channel that takes its kind; a disabled channel gets nothing.

    A SigningError (certificate expired since start-up) is left to propagate: it is retryable. An episode the
    site mappings (`site`) cannot code yet raises DocumentParked: it waits, stored.
    """
    now = now or datetime.now(UTC)
    built: list[Submission] = []
    for spec in CHANNELS:
        settings = channel_settings(portal, spec)
        if not settings.enabled:
            continue
        try:
            body = spec.build(document, settings, facility, signer, now, site)
        except DocumentParked as wait:  # named by the channel that waits
            raise DocumentParked(document, wait.codes, spec.name) from None
        except ValueError as exc:
            raise SubmissionBuildError(f"{document.kind} document {document.idempotency_key}: {exc}") from None
        if body is not None:
            built.append(submission_for(spec, document.document_id, document.version, body))
    return built
