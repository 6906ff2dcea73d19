"""FHIR intake: authenticate the sender, validate, store durably, and only then answer 200/201.

Answers are kept beside the message (unencrypted, as the HL7 ACKs are; gateway.fhir_receipt), so they carry
only generated ids, element paths and issue texts, never a personal value.

`PUT [type]/[id]` creates or updates with the client's id: the first PUT of an id answers 201 (version 1),
every later one is a new version (200), even when its content repeats an earlier one, so that an A, B, A
correction is never taken for a retransmission; a retried PUT then changes nothing in the record, as the
mapping is idempotent.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.fhir_api import (
    Credentials,
    FhirAnswer,
    FhirRequest,
    Interaction,
    information,
    outcome_answer,
    reason_phrase,
    to_json,
)
from gateway.config import FhirSender, HttpSettings
from gateway.fhir_receipt import KeptAnswer, respond, unseal
from gateway.logs import correlation, get_logger, loggable, new_correlation_id
from gateway.metrics import Metrics, message_type_label
from gateway.store import Inbound, Store
from mappings.fhir_in import operation_outcome
from mappings.model import Issue

log = get_logger(__name__)

Validate = Callable[[dict[str, Any]], list[Issue]]

# Bundle is here for `POST [base]/Bundle`, the FHIR way to store a document; transactions go to the base.
RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "Observation", "AllergyIntolerance", "Procedure",
                  "MedicationStatement", "Immunization", "DiagnosticReport", "Composition", "MedicationRequest",
                  "MedicationDispense", "MedicationAdministration", "ChargeItem", "ClinicalImpression", "Bundle")
BUNDLE_TYPES = ("transaction", "batch", "document", "collection")
ENTRY_METHODS = {"POST": 201, "PUT": 200}
OPEN_SENDER = "anonymous"
_ENTRY_PATH = re.compile(r"^Bundle\.entry\[(\d+)\]")


class FhirIntake:
    """The FHIR API's handler: every request gets one precise answer, and 2xx only once it is on disk."""

    resource_types = RESOURCE_TYPES

    def __init__(self, store: Store, metrics: Metrics, settings: HttpSettings, validate: Validate) -> None:
        self._store = store
        self._metrics = metrics
        self._validate = validate
        self._senders = {sender.name: sender for sender in settings.fhir_senders}
        if not self._senders:
            log.warning("fhir_authentication_off", note="http.fhir_senders is empty: any client may post (demo only)")

    def authenticate(self, credentials: Credentials) -> str | None:
        """The sender these credentials prove, or None; a presented but wrong token never falls back."""
        if not self._senders:
            return OPEN_SENDER
        if credentials.bearer_token:
            digest = hashlib.sha256(credentials.bearer_token.encode("utf-8")).hexdigest()
            matches = [sender.name for sender in self._senders.values()
                       if sender.token_sha256 and hmac.compare_digest(digest, sender.token_sha256)]
            return matches[0] if matches else None
        if credentials.client_cn:
            for sender in self._senders.values():
                if sender.client_cert_cn and hmac.compare_digest(sender.client_cert_cn, credentials.client_cn):
                    return sender.name
        return None

    def refused(self, status: int, issue: Issue) -> None:
        """Count and log a request the protocol layer refused before it reached the business rules."""
        self._metrics.acks.labels("fhir", str(status)).inc()
        log.warning("fhir_refused", status=status, problems=[f"{loggable(issue.location)} {issue.code}"])

    async def submit(self, request: FhirRequest) -> FhirAnswer:
        """Create, transaction, batch or document: stored durably before any 2xx."""
        started = time.perf_counter()
        with correlation(new_correlation_id(), source="fhir") as correlation_id:
            answer = await self._submit(request, correlation_id)
            self._metrics.acks.labels("fhir", str(answer.status)).inc()
            self._metrics.ack_latency.labels("fhir").observe(time.perf_counter() - started)
            self._metrics.count_sender("fhir", request.sender, answer.status < 300)
            return answer

    async def validate(self, request: FhirRequest) -> FhirAnswer:
        """$validate: every issue as an OperationOutcome with status 200; nothing is stored."""
        with correlation(new_correlation_id(), source="fhir"):
            forbidden = self._forbidden(request)
            if forbidden is not None:
                return self._refuse(403, [forbidden])
            issues = await self._issues(request)
            log.info("fhir_validated", resource_type=loggable(request.resource["resourceType"]), issues=len(issues))
            self._metrics.acks.labels("fhir", "200").inc()
            if not issues:
                return FhirAnswer(200, to_json(information(request.resource["resourceType"], "no problems found")))
            return outcome_answer(200, issues)

    async def _submit(self, request: FhirRequest, correlation_id: str) -> FhirAnswer:
        resource = request.resource
        resource_type = resource["resourceType"]
        self._metrics.messages_received.labels("fhir", message_type_label(resource_type)).inc()
        log.info("fhir_received", resource_type=resource_type, interaction=request.interaction,
                 sender=request.sender, bytes=len(request.body))
        forbidden = self._forbidden(request)
        if forbidden is not None:
            return self._refuse(403, [forbidden])
        issues = await self._issues(request)
        if resource_type == "Bundle" and resource.get("type") == "batch":
            return await self._submit_batch(request, issues, correlation_id)
        if any(issue.severity == "error" for issue in issues):
            return self._refuse(422, issues)
        if request.interaction == "update":
            return await self._update(request, issues, correlation_id)
        if resource_type == "Bundle" and resource["type"] == "transaction":
            response = _response_bundle("transaction-response", resource["entry"], issues, set(), time.time())
            return await self._store_and_answer(request, request.body, KeptAnswer(200, response), correlation_id)
        resource_id = str(uuid.uuid4())
        what = resource_type if resource_type != "Bundle" else f"{resource['type']} Bundle"
        outcome = _accepted(resource_type, f"{what} accepted as {resource_type}/{resource_id}/_history/1", issues)
        kept = KeptAnswer(201, outcome, resource_id, "1", time.time())
        return await self._store_and_answer(request, request.body, kept, correlation_id)

    async def _update(self, request: FhirRequest, issues: list[Issue], correlation_id: str) -> FhirAnswer:
        """PUT [type]/[id]: 201 and version 1 the first time this sender names the id, else a new version."""
        resource_type = request.resource["resourceType"]
        key = update_key(resource_type, request.resource_id, self._store.lookup_digest)
        created = KeptAnswer(201, _accepted(resource_type, f"{resource_type} created as version 1", issues),
                             version="1", at=time.time())
        stored = await self._store.store_inbound(self._inbound(request, key, request.body, created.seal(),
                                                               correlation_id))
        if not stored.duplicate:
            log.info("fhir_stored", message_id=stored.message_id, resource_type=resource_type, version="1")
            return respond(created, request)
        version = str(time.time_ns())
        updated = KeptAnswer(200, _accepted(resource_type, f"{resource_type} updated as version {version}", issues),
                             version=version, at=time.time())
        stored = await self._store.store_inbound(self._inbound(request, f"{key}/_history/{version}", request.body,
                                                               updated.seal(), correlation_id))
        log.info("fhir_stored", message_id=stored.message_id, resource_type=resource_type, version=version)
        return respond(unseal(stored.ack), request, replay=stored.duplicate)

    async def _submit_batch(self, request: FhirRequest, issues: list[Issue], correlation_id: str) -> FhirAnswer:
        """A batch keeps its good entries: each entry gets its own status, the failed ones are not stored."""
        entries = request.resource["entry"]
        failed = {_entry_index(issue) for issue in issues if issue.severity == "error"}
        if None in failed or failed.issuperset(range(len(entries))):
            return self._refuse(422, issues)
        kept = {**request.resource, "entry": [entry for index, entry in enumerate(entries) if index not in failed]}
        if failed and any(issue.severity == "error" for issue in await asyncio.to_thread(self._validate, kept)):
            return self._refuse(422, [*issues, Issue("Bundle.entry", "batch-incomplete",
                                                     "without its failed entries the batch is no health-book record")])
        self._count_errors(issues)
        response = _response_bundle("batch-response", entries, issues, failed, time.time())
        payload = request.body if not failed else to_json(kept)
        return await self._store_and_answer(request, payload, KeptAnswer(200, response), correlation_id)

    def _inbound(self, request: FhirRequest, control: str, payload: bytes, ack: bytes, correlation_id: str,
                 digest: str = "") -> Inbound:
        return Inbound(source="fhir", sender=request.sender, control_id=control,
                       message_type=request.resource["resourceType"], correlation_id=correlation_id,
                       payload=payload, ack=ack, content_digest=digest)

    async def _store_and_answer(self, request: FhirRequest, payload: bytes, kept: KeptAnswer,
                                correlation_id: str) -> FhirAnswer:
        """Commit first; a repeat of the same identifier gets the original body again, with 200.

        A Bundle.identifier already used by this sender for different content is refused (409), as MLLP
        refuses a reused MSH-10: replaying the first answer would lose the new content without a word. A
        repeated If-None-Exist replays whatever the content, as FHIR's conditional create says (the match wins).
        """
        resource_type = request.resource["resourceType"]
        stored = await self._store.store_inbound(self._inbound(
            request, control_id(request.resource, request.if_none_exist, self._store.lookup_digest), payload,
            kept.seal(), correlation_id,
            content_digest(request.resource) if bundle_identifier(request.resource) else ""))
        if not stored.same_content:
            return self._refuse(409, [Issue("Bundle.identifier", "duplicate-control-id", (
                f"this Bundle.identifier was already used by this sender for a different Bundle "
                f"(inbox:{stored.message_id}); a resend must be identical, new content needs a new identifier"))])
        if stored.duplicate:
            self._metrics.duplicates.labels("fhir").inc()
            log.info("fhir_retransmission", message_id=stored.message_id)
            return respond(unseal(stored.ack), request, replay=True)
        log.info("fhir_stored", message_id=stored.message_id, resource_type=resource_type)
        return respond(kept, request)

    async def _issues(self, request: FhirRequest) -> list[Issue]:
        """Bundle rules first, then validation in a thread: a large Bundle takes seconds, MLLP must not wait."""
        return (_bundle_issues(request.resource, request.interaction)
                or list(await asyncio.to_thread(self._validate, request.resource)))

    def _forbidden(self, request: FhirRequest) -> Issue | None:
        """Why this sender may not post this resource type, if it may not."""
        sender: FhirSender | None = self._senders.get(request.sender)
        if sender is None or not sender.resource_types:
            return None
        resource = request.resource
        located = [(resource["resourceType"], resource["resourceType"])]
        if resource["resourceType"] == "Bundle":
            located = [(f"Bundle.entry[{index}].resource", entry.get("resource", {}).get("resourceType"))
                       for index, entry in enumerate(_entries(resource)) if isinstance(entry.get("resource"), dict)]
        for location, resource_type in located:
            if resource_type not in sender.resource_types:
                return Issue(location, "forbidden", f"sender {sender.name!r} may not post {resource_type} resources")
        return None

    def _refuse(self, status: int, issues: list[Issue]) -> FhirAnswer:
        self._count_errors(issues)
        log.warning("fhir_refused", status=status, problems=[
            f"{loggable(issue.location)} {issue.code}" for issue in issues if issue.severity == "error"])
        return outcome_answer(status, issues)

    def _count_errors(self, issues: list[Issue]) -> None:
        for issue in issues:
            if issue.severity == "error":
                self._metrics.mapping_errors.labels("fhir", issue.code).inc()


def _raw(text: str) -> bytes:
    """Client text as bytes to hash: bytes that were not UTF-8 reach us as lone surrogates, kept as they came."""
    return text.encode("utf-8", "surrogatepass")


def control_id(resource: dict[str, Any], if_none_exist: str, lookup_digest: Callable[[str], str]) -> str:
    """The idempotency key: Bundle.identifier, else the If-None-Exist criteria, keyed (they name people: a
    bare hash of a citizen id is recovered in a second); HMAC of their SHA-256, as store migration 6 rekeyed."""
    identified = bundle_identifier(resource)
    if identified:
        return identified
    if if_none_exist:
        digest = lookup_digest(hashlib.sha256(_raw(if_none_exist)).hexdigest())
        return f"{resource['resourceType']}?key:{digest}"
    return f"urn:uuid:{uuid.uuid4()}"


def update_key(resource_type: str, resource_id: str, lookup_digest: Callable[[str], str]) -> str:
    """The key of PUT [type]/[id], keyed (a client may use a citizen id as the id), as store migration 6 rekeyed."""
    return f"{resource_type}/key:{lookup_digest(hashlib.sha256(_raw(resource_id)).hexdigest()[:40])[:40]}"


def bundle_identifier(resource: dict[str, Any]) -> str:
    """`system|value` of Bundle.identifier, "" when the resource is no Bundle or has none."""
    identifier = resource.get("identifier") if resource["resourceType"] == "Bundle" else None
    if isinstance(identifier, dict) and identifier.get("value"):
        return f"{identifier.get('system', '')}|{identifier['value']}"
    return ""


def content_digest(resource: dict[str, Any]) -> str:
    """What makes two Bundles the same: all but Bundle.timestamp and meta, which a sender may restamp on a resend."""
    content = {key: value for key, value in resource.items() if key not in ("timestamp", "meta")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    entries = bundle.get("entry")
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _bundle_issues(resource: dict[str, Any], interaction: Interaction) -> list[Issue]:
    """What a Bundle must be for this gateway to take it: a known type, entries with resources and methods."""
    if resource["resourceType"] != "Bundle":
        return []
    bundle_type = resource.get("type")
    if bundle_type not in BUNDLE_TYPES:
        return [Issue("Bundle.type", "unsupported-bundle", f"Bundle.type must be one of {', '.join(BUNDLE_TYPES)}")]
    if interaction in ("create", "update") and bundle_type in ("transaction", "batch"):
        return [Issue("Bundle.type", "unsupported-bundle",
                      "post transactions and batches to the base URL, not to [base]/Bundle")]
    entries = resource.get("entry")
    if not isinstance(entries, list) or not entries:
        return [Issue("Bundle.entry", "required", "the Bundle has no entries")]
    issues = []
    for index, entry in enumerate(entries):
        path = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            issues.append(Issue(f"{path}.resource", "required", "every entry needs a resource"))
            continue
        if bundle_type in ("transaction", "batch"):
            method = (entry.get("request") or {}).get("method") if isinstance(entry.get("request"), dict) else None
            if not isinstance(method, str) or method not in ENTRY_METHODS:  # a list or object is no method
                issues.append(Issue(f"{path}.request.method", "unsupported-method",
                                    f"entry request method must be one of {', '.join(ENTRY_METHODS)}"))
    return issues


def _entry_index(issue: Issue) -> int | None:
    match = _ENTRY_PATH.match(issue.location)
    return int(match.group(1)) if match else None


def _accepted(location: str, message: str, issues: list[Issue]) -> dict[str, Any]:
    """The informational outcome of a create or update, with the warnings the mapping gave."""
    outcome = information(location, f"{message}; it will be sent to the national e-health book")
    if issues:
        outcome["issue"] += operation_outcome(issues)["issue"]
    return outcome


def _response_bundle(bundle_type: str, entries: list[dict[str, Any]], issues: list[Issue],
                     failed: set[int | None], at: float) -> dict[str, Any]:
    """The transaction-response or batch-response: one entry per request entry, in the same order, each kept
    one with its location, version (etag) and commit time (lastModified)."""
    last_modified = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    by_entry: dict[int | None, list[Issue]] = {}
    for issue in issues:
        by_entry.setdefault(_entry_index(issue), []).append(issue)
    answers = []
    for index, entry in enumerate(entries):
        entry_issues = by_entry.get(index, [])
        response: dict[str, Any]
        if index in failed:
            response = {"status": reason_phrase(422)}
        else:
            resource_type = entry["resource"]["resourceType"]
            response = {"status": reason_phrase(ENTRY_METHODS[entry["request"]["method"]]),
                        "location": f"{resource_type}/{uuid.uuid4()}/_history/1", "etag": 'W/"1"',
                        "lastModified": last_modified}
        if entry_issues:
            response["outcome"] = operation_outcome(entry_issues)
        answers.append({"response": response})
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": bundle_type, "entry": answers}
