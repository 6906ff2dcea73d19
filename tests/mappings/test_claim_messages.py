"""Claim messages (DFT^P03, RDE^O11, RDS^O13, RAS^O17, IN1, PD1, PV1-20/36, PV2-24) at the screen and in the map."""
from __future__ import annotations

import pytest

from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message, screen
from mappings.hl7v2.rules import DATE_FIELDS, REPEATING_SEGMENTS
from tests.mappings.claim_samples import inpatient_messages, outpatient_bundle
from tests.mappings.conftest import replace_field

MESSAGES = dict(inpatient_messages())


def errors(message: str) -> list[tuple[str, str]]:
    """Screen's errors, after checking map_message refuses the message for exactly the same ones."""
    screened = [(i.location, i.code) for i in screen(message) if i.severity == "error"]
    mapped = map_message(message)
    assert [(i.location, i.code) for i in mapped.issues if i.severity == "error"] == screened
    assert bool(mapped.fragments) == (not screened)
    return screened


def set_field(message: str, segment: str, occurrence: int, field: int, value: str) -> str:
    """The message with field `field` of the `occurrence`-th `segment` replaced."""
    lines, seen = message.split("\r"), 0
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            seen += 1
            if seen == occurrence:
                parts = line.split("|")
                parts += [""] * (field + 1 - len(parts))
                parts[field] = value
                lines[i] = "|".join(parts)
    return "\r".join(lines)


def without(message: str, segment: str) -> str:
    return "\r".join(line for line in message.split("\r") if not line.startswith(segment + "|"))


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_sample_message_is_accepted(name: str) -> None:
    assert errors(MESSAGES[name]) == []


@pytest.mark.parametrize(("name", "segment", "occurrence", "field", "value", "expected"), [
    ("06_dft_p03_charges.hl7", "FT1", 2, 10, "", ("FT1[2]-10", "required")),
    ("06_dft_p03_charges.hl7", "FT1", 2, 10, "0", ("FT1[2]-10", "invalid-number")),
    ("06_dft_p03_charges.hl7", "FT1", 3, 12, "1.500,5", ("FT1[3]-12", "invalid-number")),
    ("06_dft_p03_charges.hl7", "FT1", 1, 7, "", ("FT1[1]-7", "required")),
    ("06_dft_p03_charges.hl7", "FT1", 1, 4, "", ("FT1[1]-4", "required")),
    ("06_dft_p03_charges.hl7", "FT1", 1, 6, "XX", ("FT1[1]-6", "invalid-code")),
    ("06_dft_p03_charges.hl7", "FT1", 1, 4, "20260231", ("FT1[1]-4", "invalid-date")),
    ("02_rde_o11_orders.hl7", "RXE", 2, 10, "", ("RXE[2]-10", "required")),
    ("02_rde_o11_orders.hl7", "RXE", 1, 2, "", ("RXE[1]-2", "required")),
    ("02_rde_o11_orders.hl7", "ORC", 1, 2, "", ("ORC-2", "required")),
    ("03_rds_o13_dispense.hl7", "RXD", 1, 4, "năm", ("RXD[1]-4", "invalid-number")),
    ("03_rds_o13_dispense.hl7", "RXD", 1, 3, "", ("RXD[1]-3", "required")),
    ("04_ras_o17_given.hl7", "RXA", 1, 3, "", ("RXA[1]-3", "required")),
    ("10_adt_a03_discharge.hl7", "IN1", 1, 36, "HT34040987", ("IN1[1]-36", "bhyt-format")),
    ("10_adt_a03_discharge.hl7", "IN1", 1, 13, "20251231", ("IN1[1]-13", "invalid-date")),
    ("10_adt_a03_discharge.hl7", "PD1", 1, 3, "BV^^4000000000123", ("PD1-3", "facility-code-swapped")),
])
def test_a_claim_field_that_cannot_make_a_valid_claim_is_refused_by_name(
        name: str, segment: str, occurrence: int, field: int, value: str, expected: tuple[str, str]) -> None:
    assert errors(set_field(MESSAGES[name], segment, occurrence, field, value)) == [expected]


@pytest.mark.parametrize(("name", "segment"), [("06_dft_p03_charges.hl7", "FT1"), ("02_rde_o11_orders.hl7", "RXE"),
                                               ("03_rds_o13_dispense.hl7", "RXD"), ("04_ras_o17_given.hl7", "RXA")])
def test_a_claim_message_without_its_segment_is_refused(name: str, segment: str) -> None:
    assert (segment, "required") in errors(without(MESSAGES[name], segment))


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_impossible_times_in_claim_messages_are_refused_at_the_field(name: str) -> None:
    message = MESSAGES[name]
    present = {line[:3] for line in message.split("\r")}
    for segment in ("FT1", "RXD", "ORC"):
        for number in DATE_FIELDS[segment] if segment in present else ():
            changed = replace_field(message, segment, number, "20261399250000")
            location = f"{segment}[1]-{number}" if segment in REPEATING_SEGMENTS else f"{segment}-{number}"
            assert errors(changed) == [(location, "invalid-date")]


def test_payments_and_adjustments_are_not_claim_lines() -> None:
    message = set_field(MESSAGES["06_dft_p03_charges.hl7"], "FT1", 1, 6, "PY")
    resources = map_message(message).fragments[0].resources
    assert len([r for r in resources if r["resourceType"] == "ChargeItem"]) == 5


def test_a_credit_cancels_the_charge_with_the_same_transaction_id() -> None:
    charge = map_message(MESSAGES["06_dft_p03_charges.hl7"]).fragments[0].resources
    credit = map_message(set_field(MESSAGES["06_dft_p03_charges.hl7"], "FT1", 1, 6, "CD")).fragments[0].resources
    first = next(r for r in charge if r["resourceType"] == "ChargeItem")
    cancelled = next(r for r in credit if r["resourceType"] == "ChargeItem" and r["id"] == first["id"])
    assert (first["status"], cancelled["status"]) == ("billable", "entered-in-error")


def test_the_map_keeps_the_his_codes_and_links_orders() -> None:
    dispense = next(r for r in map_message(MESSAGES["03_rds_o13_dispense.hl7"]).fragments[0].resources
                    if r["resourceType"] == "MedicationDispense")
    given = next(r for r in map_message(MESSAGES["04_ras_o17_given.hl7"]).fragments[0].resources
                 if r["resourceType"] == "MedicationAdministration")
    assert dispense["medicationCodeableConcept"]["coding"][0]["code"] == "AMLO5"
    assert dispense["authorizingPrescription"][0]["identifier"]["value"] == given["request"]["identifier"]["value"] \
        == "RX26-0001"


def test_admission_carries_card_registration_and_category() -> None:
    resources = map_message(MESSAGES["01_adt_a01_admit.hl7"]).fragments[0].resources
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    coverage = next(r for r in resources if r["resourceType"] == "Coverage")
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    assert patient["generalPractitioner"][0]["identifier"]["value"] == "40001"
    assert coverage["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    assert encounter["extension"][0]["valueCoding"]["code"] == "BHYT-DT"
    assert encounter["location"][0]["location"]["identifier"]["value"] == "NOI-TM"
    assert encounter["type"][0]["coding"][0]["code"] == "03"


@pytest.mark.parametrize("resource_type", ["MedicationRequest", "MedicationDispense", "ChargeItem",
                                           "ClinicalImpression"])
def test_fhir_claim_resources_are_accepted_alone(resource_type: str) -> None:
    resource = next(e["resource"] for e in outpatient_bundle()["entry"] if e["resource"]["resourceType"] ==
                    resource_type)
    subject = {"identifier": {"system": "urn:hbgw:id:cccd", "value": "048190007788"}}
    visit = {"identifier": {"system": "urn:hbgw:visit:pkdk-danang", "value": "KB26-005120"}}
    link = "context" if resource_type in ("MedicationDispense", "ChargeItem") else "encounter"
    result = map_fhir({**resource, "subject": subject, link: visit})
    assert result.ok, result.issues
    assert result.fragments[0].document_id == "pkdk-danang_KB26-005120"


def test_a_fhir_charge_without_its_code_is_refused_at_the_element() -> None:
    bundle = outpatient_bundle()
    charge = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ChargeItem")
    del charge["code"]
    issues = map_fhir(bundle).issues
    assert any(i.location.endswith("resource.code") and i.severity == "error" for i in issues), issues


@pytest.mark.parametrize(("resource_type", "drop", "where"), [
    ("ChargeItem", "quantity", "Bundle.entry[8].resource.quantity.value"),
    ("ChargeItem", "occurrencePeriod", "Bundle.entry[8].resource.occurrenceDateTime"),
    ("MedicationRequest", "identifier", "Bundle.entry[6].resource.identifier"),
    ("MedicationRequest", "dispenseRequest", "Bundle.entry[6].resource.dispenseRequest.quantity.value"),
    ("MedicationDispense", "whenHandedOver", "Bundle.entry[7].resource.whenHandedOver"),
])
def test_a_fhir_claim_resource_that_cannot_make_a_row_is_refused_at_the_element(
        resource_type: str, drop: str, where: str) -> None:
    bundle = outpatient_bundle()
    resource = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
    del resource[drop]
    assert [(i.location, i.code) for i in map_fhir(bundle).issues if i.severity == "error"] == [(where, "required")]


def test_a_site_s_own_discharge_code_waits_for_its_mapping_and_another_insurer_is_no_bhyt_card() -> None:
    from mappings.document import assemble
    from mappings.xml130 import build_claim
    from tests.mappings.claim_samples import INPATIENT_FACILITY, rows, site

    message = set_field(set_field(MESSAGES["10_adt_a03_discharge.hl7"], "PV1", 1, 36, "GDD"), "PV2", 1, 24, "02")
    message = set_field(message, "IN1", 1, 36, "022LP554")  # a private insurer's policy number
    assert errors(message) == []
    document = assemble(None, map_message(message).fragments[0])
    assert not [r for r in map_message(message).fragments[0].resources if r["resourceType"] == "Coverage"]
    assert build_claim(document, INPATIENT_FACILITY, site()).unmapped == ("disposition:GDD",)
    mapped = build_claim(document, INPATIENT_FACILITY, {**site(), "dispositions": {"GDD": "4"}})
    summary = rows("XML1", mapped.tables["XML1"])[0]
    assert (summary["MA_LOAI_RV"], summary["KET_QUA_DTRI"]) == ("4", "7")
