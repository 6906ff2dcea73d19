"""A real FHIR client library (fhirpy, async, from PyPI) drives the gateway's FHIR API over a socket."""
from __future__ import annotations

import json

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, OperationOutcome

from tests.adapters.test_fhir_api import TOKEN, RunningApi, corpus_bundle, corpus_resource


def client(api: RunningApi, token: str = TOKEN, **headers: str) -> AsyncFHIRClient:
    return AsyncFHIRClient(api.base, authorization=f"Bearer {token}", extra_headers=headers or None)


async def test_client_reads_the_capability_statement(api: RunningApi) -> None:
    statement = await client(api).execute("metadata", method="get")
    assert (statement["resourceType"], statement["fhirVersion"]) == ("CapabilityStatement", "4.0.1")


async def test_client_posts_the_corpus_transaction_and_its_retry(api: RunningApi) -> None:
    first = await client(api).execute("", method="post", data=corpus_bundle())
    again = await client(api).execute("", method="post", data=corpus_bundle())
    assert first["type"] == "transaction-response" and again == first
    assert len(first["entry"]) == len(corpus_bundle()["entry"])
    [claimed] = await api.store.claim_messages(10)
    assert json.loads(claimed.payload) == corpus_bundle()


async def test_client_validates_through_is_valid(api: RunningApi) -> None:
    fhir = client(api)
    assert await fhir.resource("Observation", **corpus_resource("Observation")).is_valid()
    assert not await fhir.resource("Patient", **{**corpus_resource("Patient"), "birthDate": "03.09.1990"}).is_valid()
    assert api.stored_rows() == []


async def test_client_conditional_create_keeps_its_resource_and_is_stored_once(api: RunningApi) -> None:
    fhir = client(api, Prefer="return=minimal")
    for _ in range(2):
        patient = fhir.resource("Patient", **corpus_resource("Patient"))
        await patient.create(identifier="urn:hbgw:id:cccd|048190007788")
        assert patient["birthDate"] == "1990-09-03"
    [(sender, _, message_type)] = api.stored_rows()
    assert (sender, message_type) == ("his-a", "Patient")


async def test_client_sees_refusals_as_its_own_exceptions(api: RunningApi) -> None:
    with pytest.raises(OperationOutcome) as refused:
        await client(api).resource("Patient", birthDate="1990-9-3").create()
    assert refused.value.resource["issue"][0]["expression"] == ["Patient.birthDate"]
    with pytest.raises(AuthorizationError):
        await client(api, token="not-the-token").execute("", method="post", data=corpus_bundle())
    assert api.stored_rows() == []
