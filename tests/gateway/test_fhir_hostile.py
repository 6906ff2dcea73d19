"""The FHIR API over real HTTP refuses control characters and over-long names with 422 naming the element,
and the request's bytes never reach the log."""
from __future__ import annotations

import asyncio
import http.client
import json
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.adapters.test_fhir_api import AUTH, corpus_bundle, corpus_resource, post, running_fhir_api


@pytest.mark.parametrize("family, code, element", [
    ("Võ\x00", "control-character", "Bundle.entry[0].resource.name[0].family"),
    ("V" * 1_000_000, "field-too-long", "Bundle.entry[0].resource.name[0]"),
])
async def test_a_hostile_name_is_422_naming_it_and_not_stored(tmp_path: Path, family: str, code: str,
                                                              element: str) -> None:
    bundle = corpus_bundle()
    name = bundle["entry"][0]["resource"]["name"][0]
    name["family"] = family
    name.pop("text", None)
    async with running_fhir_api(tmp_path) as api, aiohttp.ClientSession() as http:
        with capture_logs() as logged:
            status, _, outcome = await post(http, api.base, bundle, AUTH)
        good_status, _, _ = await post(http, api.base, corpus_bundle(), AUTH)
        stored = api.stored_rows()
    assert status == 422 and good_status == 200 and len(stored) == 1
    assert (outcome["issue"][0]["details"]["coding"][0]["code"], outcome["issue"][0]["expression"]) == (
        code, [element])
    assert code in repr(logged) and "\\x00" not in repr(logged) and "VVVVVVVV" not in repr(logged)


@pytest.mark.parametrize("method", [["POST"], {"x": 1}, None, 7])
async def test_an_entry_method_of_the_wrong_json_type_is_refused_not_a_500(tmp_path: Path, method: object) -> None:
    """Found by `make fuzz`: an unhashable method raised TypeError in the Bundle rules."""
    bundle = corpus_bundle()
    bundle["entry"][1]["request"]["method"] = method
    async with running_fhir_api(tmp_path) as api, aiohttp.ClientSession() as http:
        status, _, outcome = await post(http, api.base, bundle, AUTH)
    assert status == 422 and outcome["issue"][0]["expression"] == ["Bundle.entry[1].request.method"]


@pytest.mark.parametrize("path, resource", [
    ("/Patient", {"resourceType": "Patient", "na\x00me": [{"family": "Võ"}]}),
    ("/$validate", {"resourceType": "Pat\x00ient\x1b[2J"}),
])
async def test_client_chosen_names_reach_the_log_without_control_bytes(tmp_path: Path, path: str,
                                                                       resource: dict[str, object]) -> None:
    """Found by `make fuzz`: element names and resource types are the client's text, logged as issue locations."""
    async with running_fhir_api(tmp_path) as api, aiohttp.ClientSession() as http:
        with capture_logs() as logged:
            status, _, _ = await post(http, api.base + path, resource, AUTH)
    assert status in (200, 422) and logged
    assert "\\x00" not in repr(logged) and "\\x1b" not in repr(logged)


@pytest.mark.parametrize("criteria", ["identifier=\xff\xfe", "identifier=urn:hbgw:id:cccd|\x80048190007788"])
async def test_if_none_exist_criteria_that_are_not_utf8_key_the_create_not_a_500(tmp_path: Path,
                                                                                criteria: str) -> None:
    """Found by `make fuzz`: header bytes that are not UTF-8 reach the gateway as lone surrogates, which the key's
    hash could not encode (UnicodeEncodeError, a 500). The same bytes must key the same create again."""
    def create() -> int:
        url = urllib.parse.urlsplit(api.base)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:  # http.client sends a str header as latin-1: each character one raw byte, as a careless client may
            connection.request("POST", f"{url.path}/Patient", body=json.dumps(corpus_resource("Patient")),
                               headers={**AUTH, "If-None-Exist": criteria})
            return connection.getresponse().status
        finally:
            connection.close()

    async with running_fhir_api(tmp_path) as api:
        first = await asyncio.to_thread(create)
        again = await asyncio.to_thread(create)
        stored = api.stored_rows()
    assert (first, again) == (201, 200) and len(stored) == 1
