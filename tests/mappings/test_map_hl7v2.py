"""Full HL7 v2 mapping: corpus, every ADT event, versions, escapes, and never raising."""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import hl7apy
import pytest

from mappings.hl7v2 import er7, map_message
from mappings.hl7v2.events import SUPPORTED_VERSIONS
from mappings.hl7v2.parse import structure_issues
from mappings.model import Fragment
from tests.mappings.conftest import corpus_text, hl7_files, replace_field

EPISODE = "4000000000123_VV26000456"
CORPUS_EXPECTED: dict[str, tuple[str, str, str, dict[str, int]]] = {
    "adt_a01_admit.hl7": (EPISODE, "episode", "ADT^A01", {
        "Patient": 1, "Organization": 1, "Encounter": 1, "Condition": 1, "AllergyIntolerance": 1, "Observation": 6}),
    "adt_a03_discharge.hl7": (EPISODE, "episode", "ADT^A03", {
        "Patient": 1, "Organization": 1, "Encounter": 1, "Condition": 2, "Procedure": 1}),
    "adt_a08_update.hl7": (EPISODE, "episode", "ADT^A08", {"Patient": 1, "Organization": 1, "Encounter": 1}),
    "mdm_t02_summary.hl7": (EPISODE, "episode", "MDM^T02", {
        "Patient": 1, "Organization": 1, "Encounter": 1, "DocumentReference": 1}),
    "oru_r01_lab.hl7": (EPISODE, "episode", "ORU^R01", {
        "Patient": 1, "Organization": 1, "Encounter": 1, "Observation": 7, "DiagnosticReport": 1}),
    "oru_r01_health_check.hl7": ("3100000000456_KSK_KSK26000042", "health_check", "ORU^R01", {
        "Patient": 1, "Organization": 1, "Encounter": 1, "Observation": 11, "DiagnosticReport": 1}),
    "vxu_v04_immunization.hl7": ("7900000000789_TC_TC-26-0001", "immunization", "VXU^V04", {
        "Patient": 1, "Organization": 1, "Immunization": 1}),
}
CORPUS_INVALID = {
    "invalid_cccd_mismatch.hl7": {("PID-3", "cccd-birth-mismatch")},
    "invalid_missing_identity.hl7": {("PID-3", "required"), ("PID-7", "required")},
}


def only_fragment(message: str) -> Fragment:
    result = map_message(message)
    assert result.ok, result.issues
    assert all(i.severity == "warning" for i in result.issues)
    assert len(result.fragments) == 1
    return result.fragments[0]


def of_type(fragment: Fragment, resource_type: str) -> list[dict[str, Any]]:
    return [r for r in fragment.resources if r["resourceType"] == resource_type]


@pytest.mark.parametrize("name", hl7_files())
def test_corpus(name: str) -> None:
    result = map_message(corpus_text(name))
    if name in CORPUS_INVALID:
        assert not result.ok and result.fragments == ()
        assert {(i.location, i.code) for i in result.issues} == CORPUS_INVALID[name]
        return
    document_id, kind, event, counts = CORPUS_EXPECTED[name]
    fragment = only_fragment(corpus_text(name))
    assert (fragment.document_id, fragment.kind, fragment.source_event) == (document_id, kind, event)
    assert Counter(r["resourceType"] for r in fragment.resources) == counts
    assert fragment.event_time.startswith("2026-") and fragment.event_time.endswith("+07:00")


@pytest.mark.parametrize("name", sorted(CORPUS_EXPECTED))
def test_patient_key_and_document_id_carry_no_personal_data(name: str) -> None:
    fragment = only_fragment(corpus_text(name))
    cccd = next(i["value"] for i in of_type(fragment, "Patient")[0]["identifier"] if i["system"].endswith("cccd"))
    assert fragment.patient_key == hashlib.sha256(f"cccd:{cccd}".encode()).hexdigest()
    assert cccd not in fragment.document_id and len(fragment.document_id) <= 100


def test_admit_patient_and_encounter(admit: str) -> None:
    fragment = only_fragment(admit)
    patient = of_type(fragment, "Patient")[0]
    assert patient["gender"] == "male" and patient["birthDate"] == "1985-02-14"
    assert patient["name"][0]["text"] == "NGUYỄN VĂN AN"
    assert [i["type"]["coding"][0]["code"] for i in patient["identifier"]] == ["NI", "HC", "MR"]
    assert patient["extension"][0]["valueCoding"]["display"] == "Kinh"
    encounter = of_type(fragment, "Encounter")[0]
    assert encounter["class"]["code"] == "IMP" and encounter["status"] == "in-progress"
    assert encounter["period"] == {"start": "2026-03-12T08:25:00+07:00"}
    condition = of_type(fragment, "Condition")[0]
    assert condition["code"]["coding"][0]["code"] == "I10"
    pulse = next(o for o in of_type(fragment, "Observation") if o["code"]["coding"][0]["code"] == "8867-4")
    assert pulse["valueQuantity"]["value"] == 88 and pulse["category"][0]["coding"][0]["code"] == "vital-signs"


@pytest.mark.parametrize(("event", "status", "has_end"), [
    ("A01", "in-progress", True), ("A02", "in-progress", True), ("A03", "finished", True),
    ("A04", "in-progress", True), ("A05", "planned", True), ("A08", "finished", True),
    ("A11", "cancelled", True), ("A13", "in-progress", False),
])
def test_adt_events_set_encounter_status(event: str, status: str, has_end: bool) -> None:
    message = replace_field(corpus_text("adt_a03_discharge.hl7"), "MSH", 9, f"ADT^{event}^ADT_A01")
    encounter = of_type(only_fragment(message), "Encounter")[0]
    assert encounter["status"] == status
    assert ("end" in encounter["period"]) is has_end, "only A13 (cancel discharge) drops PV1-45"
    assert ("hospitalization" in encounter) is has_end


def test_a08_without_discharge_stays_in_progress() -> None:
    encounter = of_type(only_fragment(corpus_text("adt_a08_update.hl7")), "Encounter")[0]
    assert encounter["status"] == "in-progress"


@pytest.mark.parametrize("event", ["A28", "A31"])
def test_patient_events_without_visit_touch_no_document(admit: str, event: str) -> None:
    message = replace_field(replace_field(admit, "MSH", 9, f"ADT^{event}^ADT_A05"), "PV1", 19, "")
    result = map_message(message)
    assert result.ok and result.fragments == ()
    assert [(i.location, i.code, i.severity) for i in result.issues] == [("PV1-19", "no-episode", "warning")]


@pytest.mark.parametrize("event", ["A28", "A31"])
def test_patient_events_with_visit_update_only_the_patient(admit: str, event: str) -> None:
    fragment = only_fragment(replace_field(admit, "MSH", 9, f"ADT^{event}^ADT_A05"))
    assert {r["resourceType"] for r in fragment.resources} == {"Patient", "Organization"}


def test_merge_replaces_patient_and_keeps_old_identifier(admit: str) -> None:
    message = replace_field(replace_field(admit, "MSH", 9, "ADT^A40^ADT_A39"), "PV1", 19, "")
    message += "\rMRG|BN25000001^^^BVDKNA^MR||||VV26000456"
    fragment = only_fragment(message)
    assert fragment.document_id == EPISODE and fragment.source_event == "ADT^A40"
    identifiers = of_type(fragment, "Patient")[0]["identifier"]
    assert {"use": "old", "system": "urn:hbgw:mrn:bvdkna", "value": "BN25000001"} in identifiers
    assert not of_type(fragment, "Encounter")


@pytest.mark.parametrize(("version", "msh9", "warned"), [
    ("2.3", "ADT^A01", False), ("2.3.1", "ADT^A01", False), ("2.4", "ADT^A01^ADT_A01", False),
    ("2.5", "ADT^A01^ADT_A01", False), ("2.5.1", "ADT^A01^ADT_A01", False), ("2.6", "ADT^A01^ADT_A01", False),
    ("2.7", "ADT^A01^ADT_A01", False), ("2.8", "ADT^A01^ADT_A01", False), ("2.9", "ADT^A01^ADT_A01", True),
    ("2.10", "ADT^A01^ADT_A01", True), ("", "ADT^A01^ADT_A01", True),
])
def test_versions_map_to_the_same_resources(admit: str, version: str, msh9: str, warned: bool) -> None:
    message = replace_field(replace_field(admit, "MSH", 12, version), "MSH", 9, msh9)
    result = map_message(message)
    assert result.ok and len(result.fragments) == 1
    assert [i.code for i in result.issues] == (["unsupported-version"] if warned else [])
    assert result.fragments[0].resources == only_fragment(admit).resources


@pytest.mark.parametrize("version", ["9.9", "3.0", "V2.5", "2.5.1.1.1", "2."])
def test_a_version_that_is_no_hl7_v2_release_is_refused(admit: str, version: str) -> None:
    result = map_message(replace_field(admit, "MSH", 12, version))
    assert not result.ok and [(i.location, i.code) for i in result.issues] == [("MSH-12", "unsupported-version")]


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_terminators_give_identical_fragments(admit: str, terminator: str) -> None:
    assert only_fragment(admit.replace("\r", terminator)) == only_fragment(admit)


def test_escape_sequences_are_decoded() -> None:
    message = corpus_text("oru_r01_lab.hl7").replace(
        "Rối loạn lipid máu; đề nghị theo dõi đường huyết", "LDL \\T\\ HDL\\.br\\tăng \\F\\ \\S\\ \\E\\")
    observations = of_type(only_fragment(message), "Observation")
    note = next(o for o in observations if o["code"]["coding"][0]["code"] == "18776-5")
    assert note["valueString"] == "LDL & HDL\ntăng | ^ \\"


def test_unescaped_ampersand_in_text_is_kept() -> None:
    message = corpus_text("oru_r01_lab.hl7").replace("Rối loạn lipid máu;", "LDL & HDL;")
    observations = of_type(only_fragment(message), "Observation")
    note = next(o for o in observations if o["code"]["coding"][0]["code"] == "18776-5")
    assert note["valueString"] == "LDL & HDL; đề nghị theo dõi đường huyết"


@pytest.mark.parametrize(("extra", "warnings"), [
    ("ZPX|1|local", []), ("ABC|1|x", [("MSH", "hl7apy-parse")]),
    ("NTE|1||ghi chú", [])])
def test_segments_hl7apy_does_not_know_are_warnings_only(admit: str, extra: str,
                                                         warnings: list[tuple[str, str]]) -> None:
    result = map_message(admit + "\r" + extra)
    assert [(i.location, i.code) for i in result.issues] == warnings
    assert result.ok and result.fragments[0].resources == only_fragment(admit).resources


@pytest.mark.parametrize("version", ["2.5", "2.7", "2.8"])
def test_a_segment_hl7apy_cannot_build_in_this_version_is_a_warning_only(admit: str, version: str) -> None:
    message = admit.replace("|2.5|", f"|{version}|", 1) + "\rQRD|20260312|R|I|Q1"  # hl7apy: IndexError in 2.7+
    result = map_message(message)
    assert result.ok and {(i.location, i.code) for i in result.issues} <= {("MSH", "hl7apy-parse")}


def test_no_segment_name_hl7apy_knows_in_any_version_makes_the_structure_check_raise(admit: str) -> None:
    names = set().union(*(hl7apy.load_library(version).SEGMENTS for version in SUPPORTED_VERSIONS
                          if version in hl7apy.SUPPORTED_LIBRARIES))
    for version in SUPPORTED_VERSIONS:
        for name in sorted(names) + ["ZPX", "PI", "pid", "1AB"]:
            message = er7.read(admit.replace("|2.5|", f"|{version}|", 1) + f"\r{name}|1")
            assert message is not None
            issues = structure_issues(message)
            assert {(i.location, i.code) for i in issues} <= {("MSH", "hl7apy-parse")}, (version, name)


def test_encoding_characters_hl7apy_refuses_are_a_warning_only(admit: str) -> None:
    message = admit.replace("MSH|^~\\&|", "MSH|^~\\~|", 1)  # subcomponent and repetition share a character
    result = map_message(message)
    assert ("MSH", "hl7apy-parse") in [(i.location, i.code) for i in result.issues]
    assert "InvalidEncodingChars" in next(i.message for i in result.issues if i.code == "hl7apy-parse")


def test_same_message_gives_same_ids(admit: str) -> None:
    assert [r["id"] for r in only_fragment(admit).resources] == [r["id"] for r in only_fragment(admit).resources]


def test_health_check_report_carries_class_and_conclusion() -> None:
    fragment = only_fragment(corpus_text("oru_r01_health_check.hl7"))
    report = of_type(fragment, "DiagnosticReport")[0]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "2"
    assert report["conclusion"] == "Đủ điều kiện sức khỏe lái xe hạng B"
    assert len(report["result"]) == 11


def test_summary_text_is_kept_whole() -> None:
    import base64
    fragment = only_fragment(corpus_text("mdm_t02_summary.hl7"))
    data = of_type(fragment, "DocumentReference")[0]["content"][0]["attachment"]["data"]
    text = base64.b64decode(data).decode()
    assert text.count("\n") == 3 and text.startswith("Bệnh nhân nam 41 tuổi") and "Hẹn tái khám" in text


def test_immunization() -> None:
    immunization = of_type(only_fragment(corpus_text("vxu_v04_immunization.hl7")), "Immunization")[0]
    assert immunization["vaccineCode"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/cvx", "code": "45", "display": "Viêm gan B sơ sinh"}
    assert immunization["doseQuantity"]["value"] == 0.5
    assert immunization["status"] == "completed" and immunization["occurrenceDateTime"] == "2026-01-10T10:00:00+07:00"


def test_corpus_vxu_rxa_is_shifted_by_one_field_and_says_so() -> None:
    """The corpus puts the lot number in RXA-14 and CP in RXA-19: read by the standard, with a warning."""
    result = map_message(corpus_text("vxu_v04_immunization.hl7"))
    assert [(i.location, i.code, i.severity) for i in result.issues] == [("RXA[1]-20", "invalid-code", "warning")]
    assert "lotNumber" not in of_type(result.fragments[0], "Immunization")[0]


@pytest.mark.parametrize(("status", "fhir"), [("CP", "completed"), ("PA", "completed"), ("RE", "not-done"),
                                              ("NA", "not-done"), ("", "completed")])
def test_immunization_completion_status(status: str, fhir: str) -> None:
    message = replace_field(corpus_text("vxu_v04_immunization.hl7"), "RXA", 15, "HB260101")
    message = replace_field(replace_field(message, "RXA", 14, ""), "RXA", 20, status)
    result = map_message(message)
    assert result.issues == ()
    immunization = of_type(result.fragments[0], "Immunization")[0]
    assert immunization["status"] == fhir and immunization["lotNumber"] == "HB260101"


@pytest.mark.parametrize(("visit", "expected"), [
    ("VV26000456", "4000000000123_VV26000456"), ("VV/1", "4000000000123_VV.002F1"),
    ("VV 1", "4000000000123_VV.00201"), ("VV_1", "4000000000123_VV.005F1"), ("VV.1", "4000000000123_VV.002E1"),
])
def test_document_id_is_injective(admit: str, visit: str, expected: str) -> None:
    assert only_fragment(replace_field(admit, "PV1", 19, visit)).document_id == expected


def test_long_visit_number_gives_a_bounded_document_id(admit: str) -> None:
    ids = {only_fragment(replace_field(admit, "PV1", 19, "V" * 120 + tail)).document_id for tail in "AB"}
    assert len(ids) == 2 and all(len(i) == 100 for i in ids)


def _mutations() -> list[str]:
    admit = corpus_text("adt_a01_admit.hl7")
    cuts = [admit[:n] for n in range(0, len(admit), 37)]
    return cuts + ["", "garbage", "MSH|^~\\&|" + "|" * 40, admit.replace("|", "||"), admit.replace("^", "~"),
                   admit.replace("PID|", "ZZZ|"), admit + "\rZPX|1|custom", admit.replace("\r", "\r\r\r")]


@pytest.mark.parametrize("message", _mutations())
def test_bad_input_never_raises(message: str) -> None:
    result = map_message(message)
    assert result.ok == (len(result.fragments) == 1)
    assert result.fragments or result.issues


@pytest.mark.parametrize(("kind", "value", "quantity"), [
    ("NM", "88", {"value": 88}), ("NM", "88.5", {"value": 88.5}), ("NM", ".5", {"value": 0.5}),
    ("NM", "<5.2", {"comparator": "<", "value": 5.2}), ("NM", ">= 100", {"comparator": ">=", "value": 100}),
    ("SN", "^88", {"value": 88}), ("SN", ">^100", {"comparator": ">", "value": 100}), ("SN", "88", {"value": 88}),
])
def test_numeric_results_become_quantities(admit: str, kind: str, value: str, quantity: dict[str, Any]) -> None:
    message = replace_field(replace_field(admit, "OBX", 2, kind), "OBX", 5, value)
    observations = of_type(only_fragment(message), "Observation")
    pulse = next(o for o in observations if o["code"]["coding"][0]["code"] == "8867-4")
    assert pulse["valueQuantity"] == {**quantity, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}


def test_a_word_in_a_numeric_result_is_refused_not_mapped(admit: str) -> None:
    result = map_message(replace_field(replace_field(admit, "OBX", 2, "NM"), "OBX", 5, "abc"))
    assert [(i.location, i.code) for i in result.issues] == [("OBX[1]-5", "invalid-number")] and not result.fragments
