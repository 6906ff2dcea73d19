"""The hub channel and the emulator's hub side in the QĐ 1551 PL02 shapes: login, push answers, res_codes,
the checksum, the form check and the XML signatures inside (real emulator on a socket, real signatures)."""
from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from adapters.portal.base import PermanentPortalError, Receipt, Submission, TransientPortalError
from adapters.portal.emulator import EmulatorConfig, create_emulator_app
from adapters.portal.http import HttpAnswer
from adapters.portal.hub import HubChannel, outcome, result_class, result_codes
from gateway.channels import submission_for
from gateway.config import HubChannelSettings, SigningSettings
from gateway.hub_message import checkup_message, hub_header, hub_message, sign_form
from gateway.signing import Signer, load_signer
from mappings.checkup.build import FormOptions, build_form
from mappings.model import FacilityInfo
from tests.adapters.portal.conftest import FACILITY_ID, Portal, _checkup_document, body_json, keys, spec
from tests.checkup_samples import EYE_DOCTOR


def hub_submission(document_id: str, version: int, body: bytes) -> Submission:
    """A hub message as the channel's submission."""
    return submission_for(spec("moh_checkup"), document_id, version, body)


def resigned(submission: Submission, signer: Signer, data: str | None = None, **header: Any) -> Submission:
    """The same message with other data or header fields and a valid checksum over them."""
    message = body_json(submission)
    message["header"].update(header)
    payload = base64.b64decode(data if data is not None else message["data"])
    body = hub_message(message["header"], payload, signer, HubChannelSettings())
    return dataclasses.replace(submission, body=body)


async def test_login_answers_header_and_data_as_pl02_shows(portal: Portal) -> None:
    async with portal.session.post(f"{portal.base_url}/api/auth/login",
                                   json={"username": "facility", "password": "s3cret-pass"}) as response:
        answer = await response.json()
    assert response.status == 200
    assert answer["header"]["res_code"] == "CM_SUCCESS" and answer["header"]["success"] is True
    assert len(str(answer["header"]["res_datetime"])) == 13
    assert set(answer["data"]) == {"token", "refresh_token", "duration", "role"}
    async with portal.session.post(f"{portal.base_url}/api/auth/login",
                                   json={"username": "facility", "password": "nope"}) as response:
        refused = await response.json()
    assert (response.status, refused["header"]["res_code"]) == (401, "CM_AUTH_ACCOUNT_FAIL")


async def test_an_accepted_push_gives_a_receipt_from_the_102_answer(
        hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    submission = make_hub("KSK-0001")
    receipt = await hub.submit(submission)
    header = receipt.raw["header"]
    assert receipt.result_code == "CM_SUCCESS"
    assert receipt.transaction_id == header["txn_id"] and receipt.transaction_id.startswith(f"DS-{FACILITY_ID}-")
    assert len(receipt.received_at) == 13 and receipt.received_at == str(header["res_datetime"])
    assert (header["msg_type"], header["ref_msg_id"]) == ("102", body_json(submission)["header"]["msg_id"])
    assert (header["sender_id"], header["receiver_id"]) == ("TDLBYT", FACILITY_ID)
    assert receipt.raw["data"]["data_state"] == "0"
    assert keys(await portal.stats()) == ["KSK-0001:v1"]


async def test_a_retransmission_gets_the_first_answer_and_is_counted_once(
        hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    submission = make_hub("KSK-0002", version=3)
    first, second = await hub.submit(submission), await hub.submit(submission)
    assert second.transaction_id == first.transaction_id
    stats = await portal.stats()
    assert (stats["accepted"], stats["duplicates"]) == (1, 1)


async def test_data_changed_after_the_checksum_is_refused_with_200_and_ps_ds_rsa_signature_invalid(
        hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    submission = make_hub("KSK-0003")
    message = body_json(submission)
    message["data"] = base64.b64encode(base64.b64decode(message["data"]).replace(b"<MACH>75", b"<MACH>76")).decode()
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(dataclasses.replace(submission, body=json.dumps(message).encode()))
    assert (caught.value.status, caught.value.result_code) == (200, "PS_DS_RSA_SIGNATURE_INVALID")
    stats = await portal.stats()
    assert (stats["signature_failures"], stats["accepted"]) == (1, 0)


async def test_a_form_changed_after_the_facility_signed_it_is_ps_ds_ca_signature_invalid(
        hub: HubChannel, make_hub: Callable[..., Submission], signer: Signer) -> None:
    submission = make_hub("KSK-0004")
    form = base64.b64decode(body_json(submission)["data"]).replace(b"<MACH>75", b"<MACH>76")
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(resigned(submission, signer, base64.b64encode(form).decode()))
    assert caught.value.result_code == "PS_DS_CA_SIGNATURE_INVALID"
    assert "CKS_BENH_VIEN" in caught.value.reason


async def test_an_unsigned_form_is_ps_ds_ca_signature_missing(
        hub: HubChannel, make_hub: Callable[..., Submission], signer: Signer) -> None:
    form = build_form(_checkup_document("KSK-0005"), FacilityInfo("Demo", "40001", FACILITY_ID), FormOptions("14", "9"))
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(resigned(make_hub("KSK-0005"), signer, base64.b64encode(form.xml).decode()))
    assert caught.value.result_code == "PS_DS_CA_SIGNATURE_MISSING"


async def test_a_message_without_checksum_is_ps_ds_rsa_signature_missing(
        hub: HubChannel, make_hub: Callable[..., Submission]) -> None:
    submission = make_hub("KSK-0006")
    message = {**body_json(submission), "signature": ""}
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(dataclasses.replace(submission, body=json.dumps(message).encode()))
    assert caught.value.result_code == "PS_DS_RSA_SIGNATURE_MISSING"


async def test_a_form_lacking_a_required_element_is_cm_invalid_request_naming_it(
        hub: HubChannel, make_hub: Callable[..., Submission], signer: Signer) -> None:
    xml = build_form(_checkup_document("KSK-0007"), FacilityInfo("Demo", "40001", FACILITY_ID),
                     FormOptions("14", "9")).xml.replace(b"<HUYET_AP>120/80</HUYET_AP>", b"<HUYET_AP/>")
    signed = signer.sign_into(xml, 0, "CKS_BENH_VIEN")
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(resigned(make_hub("KSK-0007"), signer, base64.b64encode(signed).decode()))
    assert (caught.value.status, caught.value.result_code) == (400, "CM_INVALID_REQUEST")
    assert "HUYET_AP" in caught.value.reason


@pytest.mark.parametrize(("changes", "named"), [({"receiver_id": ""}, "receiver_id"),
                                                 ({"sender_id": "40001"}, "13-digit"),
                                                 ({"msg_id": "KSK-0008:v1"}, "msg_id"),
                                                 ({"msg_type": "102"}, "msg_type"),
                                                 ({"send_datetime": "2026-11-23T08:00:00Z"}, "send_datetime"),
                                                 ({"data_type": "json/base64"}, "data_type")])
async def test_header_fields_the_hub_needs(hub: HubChannel, make_hub: Callable[..., Submission],
                                           changes: dict[str, Any], named: str) -> None:
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(make_hub("KSK-0008", **changes))
    assert caught.value.result_code == "CM_INVALID_REQUEST" and named in caught.value.reason


async def test_practitioner_signatures_inside_the_form_are_verified_too(
        hub: HubChannel, signer: Signer, portal: Portal, tmp_path: Path) -> None:
    eye_doctor = load_signer(SigningSettings(source="dev", dev_dir=tmp_path / "eye"))
    document = _checkup_document("KSK-0009")
    form = build_form(document, FacilityInfo("Demo", "40001", FACILITY_ID), FormOptions("14", "9"))
    signed = sign_form(form.xml, form.slots, signer, {EYE_DOCTOR: eye_doctor})
    assert signed.count(b"<ds:Signature xmlns") == 2  # the eye doctor's block, the facility
    settings = HubChannelSettings()
    header = hub_header(settings, FACILITY_ID, f"{FACILITY_ID}261120{'a' * 32}", datetime(2026, 11, 23, 8, 0))
    receipt = await hub.submit(hub_submission("KSK-0009", 1, hub_message(header, signed, signer, settings)))
    assert receipt.result_code == "CM_SUCCESS"
    tampered = signed.replace(b"<KHONG_KINH_MAT_PHAI>10/10", b"<KHONG_KINH_MAT_PHAI>1/10")
    header["msg_id"] = f"{FACILITY_ID}261120{'b' * 32}"
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(hub_submission("KSK-0010", 1, hub_message(header, tampered, signer, settings)))
    assert caught.value.result_code == "PS_DS_CA_SIGNATURE_INVALID"


async def test_file_content_data_shape_is_signed_over_the_data_object(
        portal: Portal, make_hub: Callable[..., Submission], signer: Signer) -> None:
    settings = HubChannelSettings(base_url=portal.base_url, username="facility", password="s3cret-pass",
                                  data_shape="file_content")
    message = body_json(make_hub("KSK-0011"))
    body = hub_message(message["header"], base64.b64decode(message["data"]), signer, settings)
    assert set(json.loads(body)["data"]) == {"file_content"}
    channel = HubChannel(settings, name="moh_checkup")
    try:
        receipt = await channel.submit(hub_submission("KSK-0011", 1, body))
    finally:
        await channel.close()
    assert receipt.result_code == "CM_SUCCESS"


def test_every_result_code_has_a_class_and_unknown_ones_are_permanent() -> None:
    table = result_codes()
    assert "QĐ 1551" in table["_source"]
    assert {entry["class"] for entry in table["codes"].values()} == {"success", "transient", "permanent"}
    assert result_class("CM_SUCCESS") == "success" and result_class("PS_DS_SAVE_FAIL") == "transient"
    assert result_class("CM_INVALID_REQUEST") == "permanent" and result_class("NEW_CODE_2027") == "permanent"


@pytest.mark.parametrize(("status", "code", "expected"), [
    (200, "CM_SUCCESS", Receipt), (200, "CM_INVALID_REQUEST", PermanentPortalError),
    (200, "PS_DS_SAVE_FAIL", TransientPortalError), (200, "", PermanentPortalError),
    (400, "CM_INVALID_REQUEST", PermanentPortalError), (400, "CM_SUCCESS", PermanentPortalError),
    (503, "", TransientPortalError), (429, "", TransientPortalError)])
def test_http_200_is_not_success_by_itself(status: int, code: str, expected: type) -> None:
    body = {"header": {"res_code": code, "res_msg": "x", "txn_id": "DS-1", "ref_msg_id": "M1",
                       "res_datetime": 1795421700000}, "data": {}}
    assert isinstance(outcome(HttpAnswer(status, body, None), "M1"), expected)


def test_an_answer_for_another_message_is_not_taken_as_this_ones_receipt() -> None:
    body = {"header": {"res_code": "CM_SUCCESS", "txn_id": "DS-1", "ref_msg_id": "OTHER"}}
    assert isinstance(outcome(HttpAnswer(200, body, None), "M1"), TransientPortalError)


async def test_an_expired_token_is_refused_with_401_and_the_channel_logs_in_again(
        hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    await hub.submit(make_hub("KSK-0012"))
    await portal.faults(expire_tokens=True)
    receipt = await hub.submit(make_hub("KSK-0013"))
    assert receipt.result_code == "CM_SUCCESS"
    stats = await portal.stats()
    assert (stats["logins"], stats["token_refusals"]) == (2, 1)


async def test_the_khamsuckhoe_packaging_is_unwrapped_checked_and_its_chukydonvi_verified(
        hub: HubChannel, signer: Signer, portal: Portal, tmp_path: Path) -> None:
    settings = HubChannelSettings(packaging="khamsuckhoe")
    eye_doctor = load_signer(SigningSettings(source="dev", dev_dir=tmp_path / "eye"))
    body = checkup_message(_checkup_document("KSK-0014"), FacilityInfo("Demo", "40001", FACILITY_ID), signer,
                           {EYE_DOCTOR: eye_doctor}, settings, datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    envelope = base64.b64decode(json.loads(body)["data"])
    assert envelope.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<KHAMSUCKHOE>")
    receipt = await hub.submit(hub_submission("KSK-0014", 1, body))
    assert receipt.result_code == "CM_SUCCESS"
    stats = await portal.stats()
    assert stats["hub_forms"] == {"TREN_18": 1}
    assert stats["hub_signatures"] == {"CKS_NGUOI_KHAM": 1, "CKS_BENH_VIEN": 1, "CHUKYDONVI": 1}
    moved = envelope.replace(b"<LOAIHOSO>XML3</LOAIHOSO>", b"<LOAIHOSO>XML4</LOAIHOSO>")
    with pytest.raises(PermanentPortalError) as caught:
        await hub.submit(resigned(hub_submission("KSK-0015", 1, body), signer, base64.b64encode(moved).decode(),
                                  msg_id=f"{FACILITY_ID}261123{'c' * 32}"))
    assert caught.value.result_code == "CM_INVALID_REQUEST" and "KHAM_THE_LUC belongs in XML3" in caught.value.reason


async def test_a_hub_that_sorts_header_keys_refuses_a_checksum_over_the_keys_as_sent(
        make_hub: Callable[..., Submission], signer: Signer, emulator_config: EmulatorConfig) -> None:
    sorting = dataclasses.replace(emulator_config, hub_sorted_keys=True)
    server = TestServer(create_emulator_app(sorting), host="127.0.0.1")
    await server.start_server()
    settings = HubChannelSettings(base_url=str(server.make_url("")).rstrip("/"), username="facility",
                                  password="s3cret-pass", checksum_key_order="sorted")
    channel = HubChannel(settings, name="moh_checkup")
    try:
        with pytest.raises(PermanentPortalError) as caught:
            await channel.submit(make_hub("KSK-0016"))
        message = body_json(make_hub("KSK-0017"))
        body = hub_message(message["header"], base64.b64decode(message["data"]), signer, settings)
        receipt = await channel.submit(hub_submission("KSK-0017", 1, body))
    finally:
        await channel.close()
        await server.close()
    assert caught.value.result_code == "PS_DS_RSA_SIGNATURE_INVALID"
    assert receipt.result_code == "CM_SUCCESS"
