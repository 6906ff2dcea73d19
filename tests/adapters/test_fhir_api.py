"""The FHIR REST API over a real socket with a real SQLite store: every status, every malformed body, and
the server still answering the next valid request."""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.fhir_api import FhirApi
from adapters.tls import server_ssl_context
from gateway.app import validate_fhir
from gateway.config import FhirSender, HttpSettings
from gateway.encryption import PayloadCipher
from gateway.fhir_intake import FhirIntake, Validate
from gateway.metrics import Metrics
from gateway.store import SqliteStore
from mappings.model import Issue
from tests.conftest import CORPUS

TOKEN = "s3cret-token-for-his-a"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
AUTH = {**FHIR_JSON, "Authorization": f"Bearer {TOKEN}"}
PATIENT = {"resourceType": "Patient", "gender": "female", "birthDate": "1990-09-03"}  # no CCCD: refused
CCCD = {"system": "urn:hbgw:id:cccd", "value": "048190007788"}
VISIT = {"system": "urn:hbgw:visit:pkdk-danang", "value": "KB26-004411"}


def corpus_bundle() -> dict[str, Any]:
    return json.loads((CORPUS / "fhir" / "transaction_outpatient_visit.json").read_text(encoding="utf-8"))


def corpus_resource(resource_type: str) -> dict[str, Any]:
    """A resource of the corpus visit, standing alone: patient and episode named by identifier."""
    [resource] = [entry["resource"] for entry in corpus_bundle()["entry"]
                  if entry["resource"]["resourceType"] == resource_type]
    if "subject" in resource:
        resource["subject"] = {"identifier": CCCD}
    if "encounter" in resource:
        resource["encounter"] = {"identifier": VISIT}
    return resource


def with_entry(bundle: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    bundle["entry"][index]["resource"].update(changes)
    return bundle


@dataclass
class RunningApi:
    base: str
    store: SqliteStore
    metrics: Metrics
    db_path: Path

    def stored_rows(self) -> list[tuple[str, str, str]]:
        """(sender, control_id, message_type) of every stored message, read from the file itself."""
        with sqlite3.connect(self.db_path) as db:
            return db.execute("SELECT sender, control_id, message_type FROM messages ORDER BY id").fetchall()


@asynccontextmanager
async def running_fhir_api(tmp_path: Path, validate: Validate = validate_fhir,
                           store_class: type[SqliteStore] = SqliteStore, **http: Any) -> AsyncIterator[RunningApi]:
    """The FHIR API mounted at /fhir as app.py mounts it, on a free 127.0.0.1 port (TLS if http.tls says so)."""
    settings = HttpSettings(**{"fhir_senders": [FhirSender(
        name="his-a", token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest())], **http})
    store = await store_class(tmp_path / "gw.db", PayloadCipher(b"k" * 32)).open()
    metrics = Metrics()
    app = web.Application(client_max_size=settings.max_body_bytes)
    FhirApi(FhirIntake(store, metrics, settings, validate), settings.max_body_bytes, "test").mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(settings.tls)).start()
    scheme = "https" if settings.tls.enabled else "http"
    try:
        yield RunningApi(f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/fhir", store, metrics, tmp_path / "gw.db")
    finally:
        await runner.cleanup()
        await store.close()


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] = AUTH,
               ) -> tuple[int, dict[str, Any], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=headers) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


def expressions(outcome: dict[str, Any]) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    return [expression for issue in outcome["issue"] for expression in issue["expression"]]


async def test_corpus_transaction_is_stored_then_answered_with_a_transaction_response(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, headers, body = await post(http, api.base, corpus_bundle())
    assert status == 200 and headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    assert body["type"] == "transaction-response"
    assert [entry["response"]["status"] for entry in body["entry"]] == ["200 OK"] + ["201 Created"] * 4
    assert body["entry"][1]["response"]["location"].startswith("Encounter/")
    assert api.stored_rows() == [("his-a", "urn:hbgw:sender:his-pkdk-danang|TX-20260402-000981", "Bundle")]


async def test_retry_with_same_bundle_identifier_returns_the_original_body_and_stores_once(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    first = await post(http, api.base, corpus_bundle())
    again = await post(http, api.base, corpus_bundle())
    assert again[0] == 200 and again[2] == first[2]
    assert len(api.stored_rows()) == 1
    assert api.metrics.duplicates.labels("fhir")._value.get() == 1


async def test_single_resource_create_answers_201_with_location_and_if_none_exist_makes_it_idempotent(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    headers = {**AUTH, "If-None-Exist": "identifier=urn:hbgw:id:cccd|048190007788"}
    patient = corpus_resource("Patient")
    status, answer_headers, body = await post(http, f"{api.base}/Patient", patient, headers)
    assert status == 201 and re.fullmatch(re.escape(api.base) + r"/Patient/[0-9a-f-]{36}/_history/1",
                                          answer_headers["Location"])
    assert [issue["severity"] for issue in body["issue"]] == ["information", "warning"]  # no episode yet
    again = await post(http, f"{api.base}/Patient", patient, headers)
    assert again[0] == 200 and again[2] == body
    [(sender, control_id, message_type)] = api.stored_rows()
    assert (sender, message_type) == ("his-a", "Patient")
    assert "048190007788" not in control_id  # the criteria name a person: only their hash is kept


async def test_document_bundle_answers_201_with_the_stored_bundle_reference(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    bundle = {**corpus_bundle(), "type": "document"}
    status, headers, body = await post(http, api.base, bundle)
    assert status == 201 and headers["Location"].startswith(f"{api.base}/Bundle/")
    assert headers["Location"].removeprefix(f"{api.base}/") in body["issue"][0]["details"]["text"]


async def test_documents_may_also_be_posted_to_the_bundle_endpoint_but_transactions_may_not(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    document = {**corpus_bundle(), "type": "collection"}
    status, headers, _ = await post(http, f"{api.base}/Bundle", document)
    assert status == 201 and headers["Location"].startswith(f"{api.base}/Bundle/")
    status, _, body = await post(http, f"{api.base}/Bundle", corpus_bundle())
    assert (status, expressions(body)) == (422, ["Bundle.type"])
    assert len(api.stored_rows()) == 1


async def test_concurrent_requests_and_retries_are_each_stored_once(api: RunningApi,
                                                                    http: aiohttp.ClientSession) -> None:
    def numbered(number: int) -> dict[str, Any]:
        bundle = corpus_bundle()
        bundle["identifier"]["value"] = f"TX-{number}"
        return bundle
    answers = await asyncio.gather(*(post(http, api.base, numbered(number % 20)) for number in range(60)))
    assert {status for status, _, _ in answers} == {200}
    by_identifier: dict[int, set[str]] = {}
    for number, (_, _, body) in enumerate(answers):
        by_identifier.setdefault(number % 20, set()).add(json.dumps(body))
    assert all(len(bodies) == 1 for bodies in by_identifier.values())  # every retry saw the original answer
    assert sorted(control_id for _, control_id, _ in api.stored_rows()) == sorted(
        f"urn:hbgw:sender:his-pkdk-danang|TX-{number}" for number in range(20))


async def test_batch_keeps_good_entries_and_answers_each_entry(api: RunningApi, http: aiohttp.ClientSession) -> None:
    bundle = with_entry({**corpus_bundle(), "type": "batch"}, 3, effectiveDateTime="2026-04-31T08:15:00+07:00")
    status, _, body = await post(http, api.base, bundle)
    assert status == 200 and body["type"] == "batch-response"
    assert [entry["response"]["status"] for entry in body["entry"]] == (
        ["200 OK", "201 Created", "201 Created", "422 Unprocessable Entity", "201 Created"])
    assert expressions(body["entry"][3]["response"]["outcome"]) == ["Bundle.entry[3].resource.effectiveDateTime"]
    [claimed] = await api.store.claim_messages(10)
    stored_types = [entry["resource"]["resourceType"] for entry in json.loads(claimed.payload)["entry"]]
    assert stored_types == ["Patient", "Encounter", "Condition", "MedicationStatement"]


async def test_batch_that_is_no_record_without_its_failed_entry_is_refused_whole(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    bundle = with_entry({**corpus_bundle(), "type": "batch"}, 0, birthDate="03/09/1990")
    status, _, body = await post(http, api.base, bundle)
    assert (status, expressions(body)) == (422, ["Bundle.entry[0].resource.birthDate", "Bundle.entry"])
    assert api.stored_rows() == []


async def test_validate_answers_200_with_issues_and_stores_nothing(api: RunningApi,
                                                                  http: aiohttp.ClientSession) -> None:
    bad = {**corpus_resource("Patient"), "birthDate": "3/9/1990"}
    status, _, body = await post(http, f"{api.base}/Patient/$validate", bad)
    assert status == 200 and expressions(body) == ["Patient.birthDate"]
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": corpus_bundle()}]}
    status, _, body = await post(http, f"{api.base}/$validate", wrapped)
    assert status == 200 and [issue["severity"] for issue in body["issue"]] == ["information"]
    status, _, body = await post(http, f"{api.base}/$validate", {"resourceType": "Parameters", "parameter": "x"})
    assert (status, expressions(body)) == (400, ["Parameters.parameter"])
    assert api.stored_rows() == []


async def test_metadata_is_an_r4_capability_statement(api: RunningApi, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.base}/metadata") as response:
        statement = await response.json(content_type="application/fhir+json")
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    assert "Immunization" in {resource["type"] for resource in statement["rest"][0]["resource"]}


MALFORMED = [
    pytest.param(b'{"resourceType": "Bundle", ', FHIR_JSON, 400, "$this", id="invalid-json"),
    pytest.param(b"[1, 2]", FHIR_JSON, 400, "$this", id="json-array"),
    pytest.param(b"\xff\xfe{}", FHIR_JSON, 400, "$this", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, FHIR_JSON, 400, "$this", id="nested-too-deep"),
    pytest.param(b'{"resourceType": "Bundle", "total": ' + b"9" * 5000 + b"}", FHIR_JSON, 400, "$this",
                 id="integer-too-long"),
    pytest.param(b'{"type": "transaction"}', FHIR_JSON, 400, "resourceType", id="no-resource-type"),
    pytest.param(json.dumps(PATIENT).encode(), FHIR_JSON, 400, "Patient.resourceType", id="patient-at-base"),
    pytest.param(b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type", id="wrong-content-type"),
    pytest.param(b"{}", {**FHIR_JSON, "Accept": "application/fhir+xml"}, 406, "Accept", id="xml-only-accept"),
    pytest.param(b"{}", {"Content-Type": "application/fhir+json; charset=iso-8859-1"}, 415, "Content-Type",
                 id="wrong-charset"),
    pytest.param(json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode(), FHIR_JSON,
                 422, "Bundle.type", id="searchset-bundle"),
    pytest.param(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": PATIENT, "request": {"method": "DELETE", "url": "Patient/1"}}]}).encode(), FHIR_JSON,
                 422, "Bundle.entry[0].request.method", id="delete-entry"),
    pytest.param(json.dumps(with_entry(corpus_bundle(), 0, birthDate="1990-02-31x")).encode(), FHIR_JSON,
                 422, "Bundle.entry[0].resource.birthDate", id="bad-birth-date"),
]


@pytest.mark.parametrize(("body", "headers", "status", "expression"), MALFORMED)
async def test_malformed_bodies_get_a_precise_outcome_and_the_server_keeps_serving(
        api: RunningApi, http: aiohttp.ClientSession, body: bytes, headers: dict[str, str], status: int,
        expression: str) -> None:
    answer = await post(http, api.base, body, {**headers, "Authorization": f"Bearer {TOKEN}"})
    assert (answer[0], expressions(answer[2])) == (status, [expression])
    assert answer[2]["issue"][0]["severity"] == "error"
    assert (await post(http, api.base, corpus_bundle()))[0] == 200
    assert api.metrics.acks.labels("fhir", str(status))._value.get() == 1


async def test_valid_fhir_that_cannot_become_a_record_is_422_at_the_element(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, f"{api.base}/Patient", PATIENT)
    assert (status, expressions(body)) == (422, ["Patient.identifier"])
    assert api.stored_rows() == []


async def test_missing_or_wrong_token_is_401_with_www_authenticate(api: RunningApi,
                                                                  http: aiohttp.ClientSession) -> None:
    for authorization in ("", "Bearer wrong", "Basic eDp5"):
        headers = {**FHIR_JSON, "Authorization": authorization} if authorization else FHIR_JSON
        status, answer_headers, body = await post(http, api.base, corpus_bundle(), headers)
        assert (status, answer_headers["WWW-Authenticate"]) == (401, 'Bearer realm="healthbook-gateway"')
        assert expressions(body) == ["Authorization"]
    assert api.stored_rows() == []


async def test_sender_limited_to_some_resource_types_gets_403(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    sender = FhirSender(name="lab", token_sha256=hashlib.sha256(b"lab-token").hexdigest(),
                        resource_types=["Observation", "DiagnosticReport"])
    async with running_fhir_api(tmp_path, fhir_senders=[sender]) as running:
        headers = {**FHIR_JSON, "Authorization": "Bearer lab-token"}
        status, _, body = await post(http, running.base, corpus_bundle(), headers)
        assert (status, expressions(body)) == (403, ["Bundle.entry[0].resource"])
        assert (await post(http, f"{running.base}/Observation", corpus_resource("Observation"), headers))[0] == 201


async def test_body_over_the_limit_is_413_whether_announced_or_streamed(tmp_path: Path,
                                                                        http: aiohttp.ClientSession) -> None:
    async with running_fhir_api(tmp_path, max_body_bytes=2048) as running:
        huge = json.dumps({**PATIENT, "text": {"div": "x" * 100_000}}).encode()
        status, _, body = await post(http, f"{running.base}/Patient", huge)
        assert (status, expressions(body)) == (413, ["$this"])

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b" " * 1024

        async with http.post(f"{running.base}/Patient", data=chunks(), headers=AUTH) as response:
            assert response.status == 413
            assert expressions(await response.json(content_type="application/fhir+json")) == ["$this"]
        assert (await post(http, f"{running.base}/Patient", corpus_resource("Patient")))[0] == 201


async def test_unknown_paths_and_methods_are_404_and_405_outcomes(api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, f"{api.base}/Medication", {"resourceType": "Medication"})
    assert (status, expressions(body)) == (404, ["Medication"])
    async with http.get(f"{api.base}/Patient/048190007788/_history") as response:
        assert response.status == 404
        assert expressions(await response.json(content_type="application/fhir+json")) == ["Patient"]
    status, _, body = await post(http, f"{api.base}/048190007788", corpus_bundle())
    assert (status, expressions(body)) == (404, ["$this"])  # the location is logged: never a number from the path
    async with http.delete(f"{api.base}/metadata") as response:
        assert response.status == 405
        assert (await response.json(content_type="application/fhir+json"))["resourceType"] == "OperationOutcome"


async def test_open_mode_takes_anyone_as_the_anonymous_sender(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_fhir_api(tmp_path, fhir_senders=[]) as running:
        assert (await post(http, running.base, corpus_bundle(), FHIR_JSON))[0] == 200
        assert running.stored_rows()[0][0] == "anonymous"


async def test_a_slow_validation_does_not_hold_up_other_requests(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    started, released = threading.Event(), threading.Event()

    def slow(resource: dict[str, Any]) -> list[Issue]:
        started.set()
        if not released.wait(10):  # still held: the event loop could not answer the metadata request meanwhile
            return [Issue("Bundle", "held", "validation was not released while it ran")]
        return validate_fhir(resource)

    async with running_fhir_api(tmp_path, validate=slow) as running:
        pending = asyncio.create_task(post(http, running.base, corpus_bundle()))
        assert await asyncio.to_thread(started.wait, 10)
        async with http.get(f"{running.base}/metadata") as response:
            assert response.status == 200
        released.set()
        assert (await pending)[0] == 200


async def test_logs_carry_no_personal_data_and_no_token(api: RunningApi, http: aiohttp.ClientSession,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    await post(http, api.base, corpus_bundle())
    await post(http, api.base, with_entry(corpus_bundle(), 0, birthDate="1990-09-33"))
    conditional = {**AUTH, "If-None-Exist": "identifier=x|048190007788"}
    await post(http, f"{api.base}/Patient", corpus_resource("Patient"), conditional)
    await post(http, f"{api.base}/Patient/048190007788", PATIENT)
    logged = capsys.readouterr()
    assert "fhir_stored" in logged.out + logged.err
    for secret in ("048190007788", "DN4484812345678", "Võ", "1990-09-0", "0935123456", TOKEN):
        assert secret not in logged.out + logged.err


class RefusingDisk(SqliteStore):
    def _insert_message(self, db: sqlite3.Connection, item: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")


async def test_a_failed_commit_is_a_500_outcome_never_a_2xx(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_fhir_api(tmp_path, store_class=RefusingDisk) as running:
        status, _, body = await post(http, running.base, corpus_bundle())
        assert (status, body["issue"][0]["code"]) == (500, "exception")
        assert running.stored_rows() == []
