"""Several facilities behind one gateway: each document signed with the codes, account and certificate of
the facility that treated the patient; a message naming none of them refused at the listener."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from adapters.portal.emulator.validate import check_checkin, check_envelope
from gateway.app import fhir_validator
from gateway.builder import submissions_builder
from gateway.config import (
    DEMO_SITE_MAPPINGS,
    BhxhChannelSettings,
    ConfigError,
    PortalSettings,
    Settings,
    SigningSettings,
    SiteMappingSettings,
    load_settings,
)
from gateway.facilities import Facilities, UnknownFacility
from gateway.signing import Signer, load_signer
from gateway.signing.sources import generate_self_signed
from gateway.submissions import SubmissionBuildError
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import Document
from tests.conftest import CORPUS, corpus_hl7
from tests.mappings.conftest import replace_field

HCM_MSH4 = "BV_TPHCM^7900000000456^L"


def signing_files(directory: Path, name: str) -> SigningSettings:
    now = datetime.now(UTC)
    certificate, key = generate_self_signed(name, now - timedelta(days=1), now + timedelta(days=30))
    (directory / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return SigningSettings(source="pem", cert_file=directory / f"{name}.crt", key_file=directory / f"{name}.key")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    directory = tmp_path_factory.mktemp("facilities")
    nghe_an = signing_files(directory, "nghean")
    return Settings.model_validate({
        "signing": nghe_an.model_dump(),
        "facilities": [
            {"name": "BVDK Nghe An", "bhxh_code": "40001", "moh_facility_id": "4000000000123",
             "province_code": "40", "senders": ["BVDK_NGHEAN"]},
            {"name": "BV TP HCM", "bhxh_code": "79001", "moh_facility_id": "7900000000456", "province_code": "79",
             "portal_username": "79001_BV", "portal_password": "hcm-pass",
             "signing": signing_files(directory, "hcm").model_dump()},
            {"name": "PKDK Da Nang", "bhxh_code": "48001", "moh_facility_id": "4800000000789",
             "senders": ["pkdk-danang"]},
        ],
        "portal": {"bhxh": {"username": "40001_BV", "password": "na-pass", "send_files": "every_version"}},
    })


@pytest.fixture(scope="module")
def facilities(settings: Settings) -> Facilities:
    return Facilities(settings, load_signer)


def episode(message: str) -> Document:
    return assemble(None, map_message(message).fragments[0])


def fhir_visit(**changes: Any) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads((CORPUS / "fhir" / "transaction_outpatient_visit.json").read_text("utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"].update(changes)
    return bundle


def test_each_document_belongs_to_the_facility_its_sender_names(facilities: Facilities) -> None:
    nghe_an = facilities.of_document(episode(corpus_hl7("adt_a01_admit.hl7")))
    hcm = facilities.of_document(episode(replace_field(corpus_hl7("adt_a01_admit.hl7"), "MSH", 4, HCM_MSH4)))
    da_nang = facilities.of_document(assemble(None, map_fhir(fhir_visit()).fragments[0]))
    assert [f.info.bhxh_code for f in (nghe_an, hcm, da_nang)] == ["40001", "79001", "48001"]
    assert (hcm.account.username, hcm.account.password, hcm.account.province_code) == ("79001_BV", "hcm-pass", "79")
    assert (nghe_an.account.username, da_nang.account.username) == ("40001_BV", "40001_BV")
    assert hcm.signer is not nghe_an.signer and da_nang.signer is nghe_an.signer
    unknown = episode(replace_field(corpus_hl7("adt_a01_admit.hl7"), "MSH", 4, "PK_LA^0100000000999^L"))
    with pytest.raises(UnknownFacility):
        facilities.of_document(unknown)


def test_what_is_signed_carries_the_treating_facility_s_codes_and_certificate(facilities: Facilities) -> None:
    build = submissions_builder(facilities, PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version")),
                                site=SiteMappingSettings(file=DEMO_SITE_MAPPINGS).as_mapping())
    admit, lab = (replace_field(corpus_hl7(name), "MSH", 4, HCM_MSH4) for name in ("adt_a01_admit.hl7",
                                                                                  "oru_r01_lab.hl7"))
    admitted = episode(admit)
    with_labs = assemble(admitted, map_message(lab).fragments[0])
    checkin, files = build(with_labs, admitted)
    hcm = facilities.all[1]
    assert check_envelope(files.body, hcm.signer.certificate_pem)["facility"] == "79001"
    assert check_checkin(checkin.body, hcm.signer.certificate_pem)["facility"] == "79001"
    with pytest.raises(Exception, match="signature"):
        check_envelope(files.body, facilities.all[0].signer.certificate_pem)
    xml1 = etree.fromstring(files.body).findtext("THONGTINDONVI/MACSKCB")
    assert xml1 == "79001"


def test_a_document_of_an_unknown_facility_is_parked_with_the_reason(facilities: Facilities) -> None:
    build = submissions_builder(facilities, PortalSettings(),
                                site=SiteMappingSettings(file=DEMO_SITE_MAPPINGS).as_mapping())
    unknown = episode(replace_field(corpus_hl7("adt_a01_admit.hl7"), "MSH", 4, "PK_LA^0100000000999^L"))
    with pytest.raises(SubmissionBuildError, match="names no configured facility"):
        build(unknown, None)


def test_the_listener_refuses_an_unknown_sending_facility_naming_msh_4(facilities: Facilities) -> None:
    assert facilities.hl7_refusals("BVDK_NGHEAN^4000000000123^L", "^") == []
    assert facilities.hl7_refusals("BVDK_NGHEAN", "^") == []  # MSH-4.1 alone, as a sender
    [issue] = facilities.hl7_refusals("PK_LA^0100000000999^L", "^")
    assert (issue.location, issue.code) == ("MSH-4", "unknown-facility")


def test_the_fhir_api_refuses_a_visit_of_an_unknown_facility(facilities: Facilities) -> None:
    validate = fhir_validator(facilities)
    assert validate(fhir_visit()) == []
    stranger = fhir_visit(serviceProvider={"identifier": {"system": "urn:hbgw:id:moh-facility",
                                                          "value": "0100000000999"}})
    [issue] = validate(stranger)
    assert (issue.location, issue.code) == ("Encounter.serviceProvider", "unknown-facility")


def test_one_facility_serves_every_sender(tmp_path: Path) -> None:
    single = Facilities(Settings.model_validate({"signing": signing_files(tmp_path, "one").model_dump()}),
                        load_signer)
    assert single.hl7_refusals("ANY^0100000000999^L", "^") == []
    document = episode(replace_field(corpus_hl7("adt_a01_admit.hl7"), "MSH", 4, "PK_LA^0100000000999^L"))
    assert single.of_document(document).info.bhxh_code == "40001"


def test_two_facilities_may_not_share_a_code() -> None:
    twice = {"bhxh_code": "40001", "moh_facility_id": "4000000000123"}
    other = {"bhxh_code": "40001", "moh_facility_id": "4000000000999"}
    with pytest.raises(ConfigError, match="share a bhxh_code"):
        load_settings(None, {"HBGW_FACILITIES": json.dumps([twice, other])})


def test_a_signer_per_facility_is_loaded_once(facilities: Facilities) -> None:
    assert len(facilities.signers) == 2
    assert all(isinstance(signer, Signer) for signer in facilities.signers)
