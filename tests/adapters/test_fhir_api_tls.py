"""FHIR senders authenticated by a verified TLS client certificate on a real TLS socket."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fhirpy import AsyncFHIRClient

from gateway.config import FhirSender, TlsSettings
from tests.adapters.test_fhir_api import FHIR_JSON, RunningApi, corpus_bundle, post, running_fhir_api
from tests.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), client_cn="his-bvdk")


@pytest.fixture
async def api(tmp_path: Path, pki: Pki) -> AsyncIterator[RunningApi]:
    tls = TlsSettings(enabled=True, cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca)
    async with running_fhir_api(tmp_path, tls=tls, fhir_senders=[
            FhirSender(name="his-bvdk-fhir", client_cert_cn="his-bvdk")]) as running:
        yield running


async def test_client_certificate_names_the_sender(api: RunningApi, pki: Pki) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as http:
        assert (await post(http, api.base, corpus_bundle(), FHIR_JSON))[0] == 200
    assert [sender for sender, _, _ in api.stored_rows()] == ["his-bvdk-fhir"]


async def test_no_client_certificate_and_no_token_is_401(api: RunningApi, pki: Pki) -> None:
    connector = aiohttp.TCPConnector(ssl=pki.client_context(with_certificate=False))
    async with aiohttp.ClientSession(connector=connector) as http:
        status, headers, _ = await post(http, api.base, corpus_bundle(), FHIR_JSON)
    assert (status, "WWW-Authenticate" in headers) == (401, True)
    assert api.stored_rows() == []


async def test_fhirpy_over_tls_with_its_certificate(api: RunningApi, pki: Pki) -> None:
    client = AsyncFHIRClient(api.base, aiohttp_config={"ssl": pki.client_context()})
    answer = await client.execute("", method="post", data=corpus_bundle())
    assert answer["type"] == "transaction-response"
