"""Every Prometheus metric the gateway exports; labels never carry patient data."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from mappings.hl7v2.events import MESSAGE_TYPES as HL7_MESSAGE_TYPES

PREFIX = "healthbook_gateway"

# Known label values; anything else is folded into "other" so a bad sender cannot explode cardinality.
MESSAGE_TYPES = HL7_MESSAGE_TYPES | frozenset({
    "Bundle", "Patient", "Encounter", "Condition", "Observation", "AllergyIntolerance", "Procedure",
    "MedicationStatement", "Immunization", "DiagnosticReport", "Composition", "MedicationRequest",
    "MedicationDispense", "MedicationAdministration", "ChargeItem", "ClinicalImpression",
})
# The states each durable queue can hold; the queue-depth gauge exports every one, zeros included.
QUEUE_STATES = {
    "inbox": ("received", "mapped", "dead", "discarded"),
    "outbox": ("pending", "in_flight", "delivered", "dead", "superseded", "discarded"),
}

# Inbound messages from a sender not named in the settings count under this label.
OTHER_SENDER = "other"
SENDER_OUTCOMES = ("accepted", "refused")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def message_type_label(message_type: str) -> str:
    """Fold an inbound message type into a bounded label value."""
    return message_type if message_type in MESSAGE_TYPES else "other"


class Metrics:
    """The gateway's metrics on one registry (a fresh registry per app keeps tests independent)."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "0.0.0") -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Process (CPU, memory, open files), Python runtime and garbage-collector metrics, unprefixed as
        # every Prometheus client library exports them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.build_info = Info(f"{PREFIX}_build", "Gateway version and runtime", registry=r)
        self.build_info.info({"version": version, "python": platform.python_version()})

        self.messages_received = Counter(
            f"{PREFIX}_messages_received_total", "Inbound messages by source and message type",
            ["source", "message_type"], registry=r)
        self.acks = Counter(
            f"{PREFIX}_acks_total", "Acknowledgements sent, by source and code (AA/AE/AR/CA/CE/CR, HTTP status)",
            ["source", "code"], registry=r)
        self.duplicates = Counter(
            f"{PREFIX}_duplicate_messages_total", "Retransmissions answered with the original acknowledgement",
            ["source"], registry=r)
        self.mapping_errors = Counter(
            f"{PREFIX}_mapping_errors_total", "Inputs refused or dead-lettered by mapping, by reason code",
            ["source", "reason"], registry=r)
        self.ack_latency = Histogram(
            f"{PREFIX}_ack_latency_seconds", "From a whole message read to its durable acknowledgement",
            ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self.group_commit_batch = Histogram(
            f"{PREFIX}_group_commit_batch_size",
            "Writes committed together in one transaction (acknowledged messages and pipeline steps)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.mllp_connections = Gauge(
            f"{PREFIX}_mllp_connections", "Open MLLP connections", registry=r)
        self.mllp_refused = Counter(
            f"{PREFIX}_mllp_refused_total", "MLLP connections or frames refused, by reason",
            ["reason"], registry=r)
        self.http_refused = Counter(
            f"{PREFIX}_http_refused_total",
            "HTTP connections refused or closed by the listener's limits (per host, in all, late request)",
            ["reason"], registry=r)
        self.sender_messages = Counter(
            f"{PREFIX}_sender_messages_total",
            "Inbound messages by sender named in the settings (others: \"other\") and outcome (accepted, refused)",
            ["source", "sender", "outcome"], registry=r)
        self.sender_last_message = Gauge(
            f"{PREFIX}_sender_last_message_timestamp_seconds",
            "Unix time of the sender's last message (of the gateway's start, if none came since)",
            ["source", "sender"], registry=r)
        self.sender_silence_limit = Gauge(
            f"{PREFIX}_sender_silence_limit_seconds",
            "How long the sender may stay silent before an alert (its silent_after_minutes setting)",
            ["source", "sender"], registry=r)
        self._senders: dict[str, frozenset[str]] = {}

        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Items in the durable store by state", ["queue", "state"], registry=r)
        self.oldest_pending_age = Gauge(
            f"{PREFIX}_oldest_pending_age_seconds",
            "Age of the oldest acknowledged item not yet delivered to the portal, dead letters included",
            registry=r)
        self.store_size = Gauge(
            f"{PREFIX}_store_size_bytes", "Size of the store's files on disk (database, write-ahead log)",
            ["file"], registry=r)
        self.store_free_disk = Gauge(
            f"{PREFIX}_store_free_disk_bytes",
            "Free space on the store's file system for the gateway's user", registry=r)
        self.purged_payloads = Counter(
            f"{PREFIX}_purged_payloads_total", "Payloads purged by the retention policy (metadata kept), by table",
            ["table"], registry=r)
        self.documents_parked = Counter(
            f"{PREFIX}_documents_parked_total",
            "Document versions held back (not sent with a blank), by gap: ward, item, lab, patient-category,"
            " price (a site mapping to add) or required (an element a later message must bring)",
            ["gap"], registry=r)
        self.documents_waiting = Gauge(
            f"{PREFIX}_documents_waiting", "Episodes parked now, waiting for a site mapping or a missing element",
            registry=r)
        self.documents_built = Counter(
            f"{PREFIX}_documents_built_total", "Health-book document versions built", ["kind"], registry=r)

        self.submissions = Counter(
            f"{PREFIX}_submissions_total", "Documents accepted by the portal, by channel", ["channel"], registry=r)
        self.failed_syncs = Counter(
            f"{PREFIX}_failed_syncs_total", "Documents refused for good (dead-lettered), by channel and reason",
            ["channel", "reason"], registry=r)
        self.submit_retries = Counter(
            f"{PREFIX}_submit_retries_total", "Submissions to retry later, by channel and reason",
            ["channel", "reason"], registry=r)
        self.submit_latency = Histogram(
            f"{PREFIX}_submit_latency_seconds", "Time of one submission attempt to the portal",
            ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.portal_responses = Counter(
            f"{PREFIX}_portal_http_responses_total", "HTTP statuses answered by the portal (0: no answer)",
            ["channel", "status"], registry=r)
        self.last_success = Gauge(
            f"{PREFIX}_last_successful_submission_timestamp_seconds",
            "Unix time of the last document the portal accepted", ["channel"], registry=r)
        self.certificate_expiry = Gauge(
            f"{PREFIX}_certificate_expiry_timestamp_seconds",
            "Unix time when the facility signing certificate expires", registry=r)

    def watch_senders(self, source: str, silence_limits: Iterable[tuple[str, float]]) -> None:
        """Start per-sender series for the senders named in the settings, so a silent one shows from the start.

        `silence_limits` pairs each sender's name with the seconds it may stay silent (0: no limit); a name
        given twice keeps the longer limit.
        """
        limits: dict[str, float] = {}
        for sender, limit in silence_limits:
            limits[sender] = max(limits.get(sender, 0.0), limit)
        self._senders[source] = frozenset(limits)
        now = time.time()
        for sender, limit in limits.items():
            for outcome in SENDER_OUTCOMES:
                self.sender_messages.labels(source, sender, outcome)
            self.sender_last_message.labels(source, sender).set(now)
            if limit > 0:
                self.sender_silence_limit.labels(source, sender).set(limit)

    def count_sender(self, source: str, sender: str, accepted: bool) -> None:
        """Count one inbound message for its sender; a sender not named in the settings counts as other."""
        label = sender if sender in self._senders.get(source, ()) else OTHER_SENDER
        self.sender_messages.labels(source, label, "accepted" if accepted else "refused").inc()
        self.sender_last_message.labels(source, label).set(time.time())

    def record_store_files(self, database: Path) -> None:
        """Database and write-ahead log sizes and free disk, from the file system (no query, no lock)."""
        for file, path in (("database", database), ("wal", database.with_name(database.name + "-wal"))):
            try:
                self.store_size.labels(file).set(path.stat().st_size)
            except FileNotFoundError:
                self.store_size.labels(file).set(0)
        disk = os.statvfs(database.parent)
        self.store_free_disk.set(disk.f_bavail * disk.f_frsize)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
