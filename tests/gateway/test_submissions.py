"""Documents become signed submissions for the right channel, which the emulator's validators accept."""
from __future__ import annotations

import base64
import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.portal.bhxh import filed_as, read_signed_document
from adapters.portal.emulator.hub import HubRefusal, check_message
from adapters.portal.emulator.validate import check_envelope
from adapters.portal.emulator.xmldsig import verify_form
from gateway.channels import build_submissions
from gateway.config import (
    BhxhChannelSettings,
    PortalSettings,
    SigningSettings,
)
from gateway.hub_message import msg_id
from gateway.signing import Signer, load_signer
from gateway.submissions import DocumentParked, SubmissionBuildError
from mappings.document import assemble
from mappings.hl7v2 import map_message
from mappings.model import Document
from tests.conftest import corpus_hl7
from tests.demo_site import FACILITY, SITE

NOW = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)


def document(corpus_file: str) -> Document:
    """The first health-book document the real mappings make from a corpus message."""
    fragment = map_message(corpus_hl7(corpus_file)).fragments[0]
    return assemble(None, fragment)


def test_episode_becomes_one_signed_bhxh_envelope(signer: Signer) -> None:
    episode = document("adt_a01_admit.hl7")
    every_version = PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version"))
    [submission] = build_submissions(episode, FACILITY, signer, every_version, now=NOW, site=SITE)
    assert (submission.channel, submission.idempotency_key) == ("bhxh_xml130", episode.idempotency_key)
    assert (submission.document_id, submission.version, submission.content_type) == (
        episode.document_id, episode.version, "application/xml")
    assert (submission.file_type, submission.facility_code) == ("130", "40001")
    assert filed_as(submission) == read_signed_document(submission.body)  # carried as signed, read nowhere
    checked = check_envelope(submission.body, signer.certificate_pem)
    assert checked["facility"] == "40001"
    assert checked["episodes"] == [episode.document_id]
    assert {"XML1", "XML8"} <= set(checked["files"])


def test_health_check_becomes_one_signed_hub_message(signer: Signer) -> None:
    check = document("oru_r01_health_check.hl7")
    [submission] = build_submissions(check, FACILITY, signer, PortalSettings(), now=NOW)
    assert (submission.channel, submission.idempotency_key) == ("moh_checkup", check.idempotency_key)
    assert (submission.file_type, submission.facility_code) == ("", "")  # BHXH's; the hub reads neither
    message = json.loads(submission.body)
    assert message["header"] == {"version": "1.0.3", "sender_id": "4000000000123", "receiver_id": "TDLBYT",
                                 "txn_type": "sync_checkup", "msg_id": msg_id("4000000000123", check),
                                 "msg_type": "101", "data_type": "xml/base64", "send_datetime": 1795421700000}
    assert list(message) == ["header", "data", "signature"]
    assert check_message(message, signer.certificate_pem) == ("LAI_XE", {"CKS_BENH_VIEN": 1})
    form = base64.b64decode(message["data"])
    assert form.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<LAI_XE>")
    assert verify_form(form, signer.certificate_pem) == {"CKS_BENH_VIEN": 1}  # no practitioner configured


def test_msg_id_is_sender_date_and_32_hex_and_the_same_for_every_retry(signer: Signer) -> None:
    check = document("oru_r01_health_check.hl7")
    first = json.loads(build_submissions(check, FACILITY, signer, PortalSettings(), now=NOW)[0].body)
    later = json.loads(build_submissions(check, FACILITY, signer, PortalSettings(),
                                         now=NOW + timedelta(days=2))[0].body)
    assert first["header"]["msg_id"] == later["header"]["msg_id"]
    assert first["header"]["send_datetime"] != later["header"]["send_datetime"]
    stamp = datetime.fromisoformat(check.bundle["timestamp"]).astimezone(timezone(timedelta(hours=7)))
    assert re.fullmatch(f"4000000000123{stamp:%y%m%d}[0-9a-f]{{32}}", first["header"]["msg_id"])
    assert uuid.UUID(first["header"]["msg_id"][-32:]).version == 4
    next_version = dataclasses.replace(check, version=2)
    assert msg_id("4000000000123", next_version) != first["header"]["msg_id"]


def test_a_practitioner_with_a_signing_source_signs_their_blocks(signer: Signer, tmp_path: Path) -> None:
    doctor = load_signer(SigningSettings(source="dev", dev_dir=tmp_path))
    check = document("oru_r01_health_check.hl7")  # conclusion by CCHN-004567-HP (OBR-16)
    [submission] = build_submissions(check, FACILITY, signer, PortalSettings(), now=NOW,
                                     practitioners={"CCHN-004567-HP": doctor})
    form = base64.b64decode(json.loads(submission.body)["data"])
    assert verify_form(form, signer.certificate_pem) == {"CKS_BENH_VIEN": 1, "CKS_NGUOI_KET_LUAN": 1}
    assert doctor.certificate_pem.split(b"\n")[1] in form  # the doctor's own certificate, not the facility's


def test_disabled_channels_get_no_submission(signer: Signer) -> None:
    portal = PortalSettings.model_validate({"bhxh": {"enabled": False}, "hub": {"enabled": False}})
    assert build_submissions(document("adt_a01_admit.hl7"), FACILITY, signer, portal, now=NOW) == []
    assert build_submissions(document("oru_r01_health_check.hl7"), FACILITY, signer, portal, now=NOW) == []


def test_immunizations_go_to_the_hub_as_the_signed_fhir_document(signer: Signer) -> None:
    vxu = document("vxu_v04_immunization.hl7")
    [submission] = build_submissions(vxu, FACILITY, signer, PortalSettings(), now=NOW)
    message = json.loads(submission.body)
    assert submission.channel == "moh_checkup" and submission.idempotency_key == vxu.idempotency_key
    assert message["header"]["txn_type"] == "sync_immunization"
    data = json.loads(base64.b64decode(message["data"]))
    assert data["resourceType"] == "Bundle" and data["type"] == "document"
    assert any(e["resource"]["resourceType"] == "Immunization" for e in data["entry"])
    assert message["header"]["data_type"] == "json/base64"
    check_message(message, signer.certificate_pem)  # the emulator takes it, signature included


def test_the_emulator_refuses_an_unknown_transaction_type(signer: Signer) -> None:
    vxu = document("vxu_v04_immunization.hl7")
    portal = PortalSettings()
    portal.hub.immunization_txn_type = "sync_vaccines"
    [submission] = build_submissions(vxu, FACILITY, signer, portal, now=NOW)
    with pytest.raises(HubRefusal, match="sync_vaccines"):
        check_message(json.loads(submission.body), signer.certificate_pem)


def test_a_document_the_mapping_cannot_render_is_a_build_error_naming_it(signer: Signer) -> None:
    check = document("oru_r01_health_check.hl7")
    without_class = dataclasses.replace(check, bundle={"resourceType": "Bundle", "type": "document", "entry": []})
    with pytest.raises(SubmissionBuildError, match=f"health_check document {check.idempotency_key}: "):
        build_submissions(without_class, FACILITY, signer, PortalSettings(), now=NOW)


def test_a_cancelled_episode_sends_nothing_more_instead_of_failing(signer: Signer) -> None:
    admit = corpus_hl7("adt_a01_admit.hl7")
    cancel = admit.replace("ADT^A01^ADT_A01|MSG000123", "ADT^A11^ADT_A09|MSG000124").replace("EVN|A01|", "EVN|A11|")
    episode = assemble(None, map_message(admit).fragments[0])
    cancelled = assemble(episode, map_message(cancel).fragments[0])
    assert cancelled.version == 2
    assert build_submissions(cancelled, FACILITY, signer, PortalSettings(), now=NOW, site=SITE) == []


def test_an_episode_the_site_mappings_cannot_code_yet_is_parked_naming_the_codes(signer: Signer) -> None:
    episode = document("adt_a01_admit.hl7")
    every_version = PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version"))
    with pytest.raises(DocumentParked) as parked:
        build_submissions(episode, FACILITY, signer, every_version, now=NOW, site={"wards": {"NOI-TM": "K02"}})
    assert (parked.value.channel, parked.value.codes) == ("bhxh_xml130", ("patient-category:",))
    assert build_submissions(episode, FACILITY, signer, every_version, now=NOW, site=SITE)  # once mapped


def test_an_episode_still_missing_a_required_element_waits_for_it(signer: Signer) -> None:
    admit = corpus_hl7("adt_a01_admit.hl7").replace("|20260312082500+0700|", "||")
    episode = assemble(None, map_message(admit).fragments[0])
    with pytest.raises(DocumentParked) as parked:
        build_submissions(episode, FACILITY, signer, PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version")),
                          now=NOW, site=SITE)
    assert "required:XML1.NGAY_VAO" in parked.value.codes
