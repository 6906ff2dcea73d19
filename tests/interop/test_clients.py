"""Two FHIR client libraries, used as their documentation shows, drive the gateway's FHIR API over a socket:
fhirpy (async) and SMART's fhirclient (sync, in a thread), through create, conditional create, update by id,
batch and transaction."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

from fhirclient import server as fhirclient_server
from fhirclient.models.bundle import Bundle
from fhirclient.models.observation import Observation
from fhirpy import AsyncFHIRClient

from tests.adapters.test_fhir_api import (
    TOKEN,
    RunningApi,
    corpus_bundle,
    corpus_resource,
)


def batch() -> dict[str, Any]:
    return {**corpus_bundle(), "type": "batch", "identifier": {"system": "urn:hbgw:sender:his-a", "value": "B-1"}}


def fhirpy(api: RunningApi) -> AsyncFHIRClient:
    return AsyncFHIRClient(api.base, authorization=f"Bearer {TOKEN}",
                           extra_headers={"Prefer": "return=representation"})


async def test_fhirpy_create_keeps_the_server_id_and_version(api: RunningApi) -> None:
    observation = fhirpy(api).resource("Observation", **corpus_resource("Observation"))
    await observation.save()
    assert observation.id and observation["meta"]["versionId"] == "1"
    assert observation["valueQuantity"]["value"] == 38.4  # the resource, not an OperationOutcome


async def test_fhirpy_conditional_create_answers_the_same_resource_twice(api: RunningApi) -> None:
    ids = set()
    for _ in range(2):
        patient = fhirpy(api).resource("Patient", **corpus_resource("Patient"))
        await patient.create(identifier="urn:hbgw:id:cccd|048190007788")
        ids.add(patient.id)
    assert len(ids) == 1 and None not in ids
    assert [row[2] for row in api.stored_rows()] == ["Patient"]


async def test_fhirpy_saves_a_resource_with_its_own_id_as_create_then_update(api: RunningApi) -> None:
    observation = fhirpy(api).resource("Observation", id="his-a-obs-77", **corpus_resource("Observation"))
    await observation.save()
    first = observation["meta"]["versionId"]
    observation["valueQuantity"] = {**observation["valueQuantity"], "value": 37.2}
    await observation.save()
    assert observation.id == "his-a-obs-77" and observation["meta"]["versionId"] != first == "1"
    assert observation["valueQuantity"]["value"] == 37.2
    assert len(api.stored_rows()) == 2


async def test_fhirpy_posts_a_batch_and_a_transaction(api: RunningApi) -> None:
    client = fhirpy(api)
    batch_answer = await client.execute("", method="post", data=batch())
    transaction_answer = await client.execute("", method="post", data=corpus_bundle())
    assert batch_answer["type"] == "batch-response" and transaction_answer["type"] == "transaction-response"
    assert len(api.stored_rows()) == 2


def smart_server(api: RunningApi) -> fhirclient_server.FHIRServer:
    """fhirclient's server object; a static bearer token goes on its requests session."""
    server = fhirclient_server.FHIRServer(None, base_uri=api.base)
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    return server


async def test_fhirclient_reads_metadata_creates_updates_and_posts_bundles(api: RunningApi) -> None:
    def flows() -> list[Any]:
        server = smart_server(api)
        capability = server.request_json("metadata")
        created = Observation(corpus_resource("Observation")).create(server)
        own = Observation({**corpus_resource("Observation"), "id": "his-a-obs-fc"})
        first_put = own.update(server)
        changed = copy.deepcopy(own.as_json())
        changed["valueQuantity"]["value"] = 37.0
        second_put = Observation(changed).update(server)
        batch_answer = Bundle(batch()).create(server)
        transaction_answer = Bundle(corpus_bundle()).create(server)
        return [capability, created, first_put, second_put, batch_answer, transaction_answer]

    capability, created, first_put, second_put, batch_answer, transaction_answer = await asyncio.to_thread(flows)
    assert capability["resourceType"] == "CapabilityStatement"
    assert {"create", "update"} <= {i["code"] for i in capability["rest"][0]["resource"][0]["interaction"]}
    assert created["resourceType"] == "OperationOutcome" and created["issue"][0]["severity"] == "information"
    assert "version 1" in first_put["issue"][0]["details"]["text"]
    assert "updated" in second_put["issue"][0]["details"]["text"]
    assert batch_answer["type"] == "batch-response" and transaction_answer["type"] == "transaction-response"
    assert len(api.stored_rows()) == 5
