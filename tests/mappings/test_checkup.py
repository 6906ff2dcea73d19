"""QĐ 1551/2062 health-check forms: conformance of the field lists (data with sources), the builder, and the
listeners' refusal of a health check that lacks what its form needs."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from datetime import date

import pytest

from mappings.checkup import forms
from mappings.checkup.build import FormOptions, build_form
from mappings.checkup.envelope import build_envelope, packaging
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message, screen
from mappings.model import Document, FacilityInfo
from tests.checkup_samples import fhir, hl7

FACILITY = FacilityInfo("Bệnh viện Demo", "40001", "4000000000123")
OPTIONS = FormOptions("14", "9")
# Element counts of QĐ 1551 PL01 per form (pages 7-25, 82-90) plus what QĐ 2062 adds (NGAY_KET_LUAN,
# CKS_NGUOI_KHAM per specialty, SO_CCCD for the under-6 form).
PL01_ROWS = {"DUOI_18": 76, "TREN_18": 99, "LAI_XE": 77, "DUOI_6": 142}
# The first and last elements of each PL01 table, as printed.
PL01_ENDS = {"DUOI_18": ("HO_TEN", "CKS_BENH_VIEN"), "TREN_18": ("HO_TEN", "CKS_BENH_VIEN"),
             "LAI_XE": ("HO_TEN", "CKS_BENH_VIEN"), "DUOI_6": ("HO_TEN", "CKS_BENH_VIEN")}
COMMON = {"HO_TEN": ("C", 255), "GIOI_TINH": ("N", 1), "NGAY_SINH": ("C", 12), "MA_DAN_TOC": ("C", 2),
          "DIA_CHI": ("C", 1024), "MATINH_CU_TRU": ("C", 3), "MAXA_CU_TRU": ("C", 5), "DOI_TUONG": ("N", 2),
          "NGUON_KINH_PHI": ("N", 1), "MA_LK": ("C", 100), "MA_CSKCB": ("C", 5), "MA_GTIN_CSKCB": ("C", 13),
          "NGAY_VAO": ("C", 12), "KET_LUAN_BENH": ("C", 255), "CKS_NGUOI_KET_LUAN": ("C", None),
          "CKS_BENH_VIEN": ("C", None)}


def document(kind: str, source: str = "hl7") -> Document:
    result = map_message(hl7(kind)) if source == "hl7" else map_fhir(fhir(kind))
    assert not [i for i in result.issues if i.severity == "error"], result.issues
    return assemble(None, result.fragments[0])


def values(xml: bytes) -> dict[str, str]:
    return {node.tag: node.text or "" for node in ET.fromstring(xml).iter() if len(node) == 0}


@pytest.mark.parametrize("root", sorted(PL01_ROWS))
def test_each_form_follows_its_pl01_table_and_names_its_source(root: str) -> None:
    form = forms.forms()[root]
    assert "QĐ 1551 PL01 mẫu" in form.source and "pages" in form.source
    rows = [f for group in form.groups for f in group.fields]
    printed = [f for f in rows if f.row != "2062"]
    assert len(printed) == PL01_ROWS[root]
    assert [int(f.row) for f in printed] == list(range(1, PL01_ROWS[root] + 1)), "PL01 row order kept"
    assert (printed[0].name, printed[-1].name) == PL01_ENDS[root]
    for name, (kind, size) in COMMON.items():
        spec = form.field(name)
        assert spec is None or (spec.kind, spec.size) == (kind, size), (root, name)
    assert all(f.kind in ("C", "N") and (f.size is None or f.size > 0) for f in rows)
    assert set(form.required) <= {f.name for f in rows}
    added = [f.name for f in rows if f.row == "2062"]
    assert "NGAY_KET_LUAN" in added and set(added) <= {"NGAY_KET_LUAN", "CKS_NGUOI_KHAM", "SO_CCCD"}


def test_the_adult_form_holds_the_named_vital_signs_and_the_conclusion() -> None:
    form = forms.forms()["TREN_18"]
    assert [f.name for f in next(g for g in form.groups if g.element == "KHAM_THE_LUC").fields] == [
        "CHIEU_CAO", "CAN_NANG", "CHI_SO_BMI", "MACH", "HUYET_AP", "KHAM_THE_LUC_PL"]
    assert [f.name for f in form.groups[-1].fields] == [
        "PHAN_LOAI_SK", "KET_LUAN_BENH", "CAC_BENH_TAT_NEU_CO", "NGAY_KET_LUAN", "CKS_NGUOI_KET_LUAN", "CKS_BENH_VIEN"]
    assert [g.element for g in form.groups if g.repeat] == ["KHAM_CAN_LAM_SANG"]


@pytest.mark.parametrize(("birth", "exam", "driver", "expected"), [
    (date(2020, 11, 21), date(2026, 11, 20), False, "DUOI_6"),
    (date(2020, 11, 20), date(2026, 11, 20), False, "DUOI_18"),
    (date(2008, 11, 21), date(2026, 11, 20), False, "DUOI_18"),
    (date(2008, 11, 20), date(2026, 11, 20), False, "TREN_18"),
    (date(1950, 1, 1), date(2026, 11, 20), True, "LAI_XE")])
def test_the_form_is_chosen_by_age_at_the_exam_date(birth: date, exam: date, driver: bool, expected: str) -> None:
    assert forms.form_for(birth, exam, driver) == expected


@pytest.mark.parametrize(("kind", "root"), [("adult", "TREN_18"), ("pupil", "DUOI_18"), ("child", "DUOI_6"),
                                            ("driver", "LAI_XE")])
@pytest.mark.parametrize("source", ["hl7", "fhir"])
def test_each_sample_becomes_its_form_with_every_element_in_order(kind: str, root: str, source: str) -> None:
    built = build_form(document(kind, source), FACILITY, OPTIONS)
    assert (built.form, built.issues) == (root, ())
    tree = ET.fromstring(built.xml)
    form = forms.forms()[root]
    assert tree.tag == root
    expected = [g.element for g in form.groups if not g.repeat or g.element in {n.tag for n in tree}]
    assert [node.tag for node in tree] == expected
    for node, group in zip(tree, [g for g in form.groups if g.element in expected], strict=True):
        assert [child.tag for child in node] == [f.name for f in group.fields]
    found = values(built.xml)
    assert (found["MA_CSKCB"], found["MA_GTIN_CSKCB"]) == ("40001", "4000000000123"), "never swapped"
    assert len(found["NGAY_SINH"]) == len(found["NGAY_VAO"]) == 12
    assert all(found[slot] == "" for slot in forms.SIGNATURE_ELEMENTS if slot in found), "left for the signer"
    assert [s.element for s in built.slots][-1] == "CKS_BENH_VIEN"


def test_the_adult_form_computes_age_bmi_and_blood_pressure_and_files_labs() -> None:
    found = values(build_form(document("adult"), FACILITY, OPTIONS).xml)
    assert (found["TUOI"], found["CHI_SO_BMI"], found["HUYET_AP"], found["MACH"]) == ("41", "22.5", "120/80", "75")
    assert (found["DOI_TUONG"], found["NGUON_KINH_PHI"], found["PHAN_LOAI_SK"]) == ("13", "4", "1")
    assert (found["KHONG_KINH_MAT_PHAI"], found["KHONG_KINH_MAT_TRAI"]) == ("10/10", "9/10")
    assert (found["MA_CHI_SO"], found["GIA_TRI"], found["DON_VI_DO"]) == ("2345-7", "5.4", "mmol/L")
    assert found["NGAY_KET_LUAN"] == "202611200930"


def test_the_driver_form_takes_the_verdict_the_site_defaults_and_the_split_eye_results() -> None:
    found = values(build_form(document("driver"), FACILITY, OPTIONS).xml)
    assert (found["KET_LUAN_LOAI_SUC_KHOE"], found["KET_LUAN_CAC_VAN_DE_SUC_KHOE"]) == (
        "Loại II", "Đủ điều kiện sức khỏe lái xe hạng B")
    assert (found["DOI_TUONG"], found["NGUON_KINH_PHI"]) == ("14", "9")
    assert (found["KHONG_KINH_MAT_PHAI"], found["KHONG_KINH_MAT_TRAI"]) == ("10/10", "10/10")
    assert "CHIEU_CAO" not in found, "the driver's form has no height"


def test_conditions_become_ket_luan_benh_icd10_codes_separated_by_semicolons() -> None:
    message = hl7("adult").replace("\rOBR|", "\rDG1|1||Z00.0^Khám sức khỏe^I10||20261120|F\rDG1|2||I10^^I10||20261120|F"
                                   "\rOBR|")
    built = build_form(assemble(None, map_message(message).fragments[0]), FACILITY, OPTIONS)
    assert values(built.xml)["KET_LUAN_BENH"] == "Z00.0;I10"


def test_a_document_lacking_what_its_form_needs_gets_issues_naming_the_elements() -> None:
    check = document("adult")
    bundle = copy.deepcopy(check.bundle)
    bundle["entry"] = [e for e in bundle["entry"]
                       if "8867-4" not in str(e["resource"].get("code")) and e["resource"]["resourceType"] != "Patient"
                       or e["resource"]["resourceType"] == "Composition"]
    built = build_form(Document(check.document_id, 1, "health_check", check.patient_key, bundle), FACILITY, OPTIONS)
    assert built.xml == b""
    named = {issue.location for issue in built.issues}
    assert {"TREN_18/KHAM_THE_LUC/MACH", "TREN_18/THONG_TIN_HANH_CHINH/HO_TEN"} <= named


def test_values_that_do_not_fit_their_element_are_issues() -> None:
    message = hl7("adult").replace("HBGW-KSK-DOI_TUONG^^L||13^^L", "HBGW-KSK-DOI_TUONG^^L||15^^L") + \
        "\rOBX|14|ST|HBGW-KSK-NHOM_MAU^^L||AB Rh+ (dương)||||||F"
    built = build_form(assemble(None, map_message(message).fragments[0]), FACILITY, OPTIONS)
    assert {(i.location, i.code) for i in built.issues} == {
        ("TREN_18/THONG_TIN_HANH_CHINH/DOI_TUONG", "invalid-code"),
        ("TREN_18/THONG_TIN_HANH_CHINH/NHOM_MAU", "invalid")}


def test_an_episode_has_no_form() -> None:
    episode = assemble(None, map_message(hl7("adult").replace("KSK-DK^", "XN-01^").replace("KSK-PL^", "XX-PL^"))
                       .fragments[0])
    assert episode.kind == "episode"
    assert build_form(episode, FACILITY, OPTIONS).issues[0].code == "invalid"


@pytest.mark.parametrize(("kind", "drop", "location", "element"), [
    ("adult", "|8480-6^", "OBX-3", "HUYET_AP"), ("adult", "|8867-4^", "OBX-3", "MACH"),
    ("pupil", "|29463-7^", "OBX-3", "CAN_NANG"), ("child", "|8302-2^", "OBX-3", "CHIEU_CAO"),
    ("driver", "|8462-4^", "OBX-3", "HUYET_AP")])
def test_the_listener_refuses_a_health_check_lacking_an_element_and_names_it(
        kind: str, drop: str, location: str, element: str) -> None:
    message = "\r".join(line for line in hl7(kind).split("\r") if drop not in line)
    issues = [(i.location, i.code, i.message) for i in screen(message) if i.severity == "error"]
    assert [(loc, code) for loc, code, _ in issues] == [(location, "required")]
    assert element in issues[0][2] and "QĐ 1551" in issues[0][2]
    assert [(i.location, i.code) for i in map_message(message).issues if i.severity == "error"] == [
        (location, "required")], "screen and map agree"


def test_the_listener_names_patient_fields_where_they_belong() -> None:
    message = hl7("adult").replace("|01^Kinh^VNDT", "|")
    assert [(i.location, i.code) for i in screen(message) if i.severity == "error"] == [("PID-22", "required")]


def test_the_under_6_form_needs_no_health_class() -> None:
    assert "KSK-PL" not in hl7("child")
    assert not [i for i in screen(hl7("child")) if i.severity == "error"]


@pytest.mark.parametrize(("kind", "drop", "element"), [("adult", "8480-6", "HUYET_AP"),
                                                       ("pupil", "KSK-PL", "PHAN_LOAI_SK"),
                                                       ("child", "29463-7", "CAN_NANG")])
def test_the_fhir_intake_refuses_a_health_check_lacking_an_element(kind: str, drop: str, element: str) -> None:
    bundle = fhir(kind)
    bundle["entry"] = [e for e in bundle["entry"] if drop not in str(e["resource"].get("code"))]
    result = map_fhir(bundle)
    errors = [i for i in result.issues if i.severity == "error"]
    assert result.fragments == () and [i.code for i in errors] == ["required"]
    assert element in errors[0].message


def test_the_fhir_intake_points_at_the_patient_for_a_missing_birth_date() -> None:
    bundle = fhir("adult")
    del bundle["entry"][0]["resource"]["birthDate"]
    errors = [i for i in map_fhir(bundle).issues if i.severity == "error" and "NGAY_SINH" in i.message]
    assert [i.location for i in errors] == ["Bundle.entry[0].resource.birthDate"]


def test_a_fhir_bundle_without_health_check_codes_stays_an_episode() -> None:
    bundle = fhir("adult")
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resource.pop("type", None) if resource["resourceType"] == "Encounter" else None
        if resource["resourceType"] == "DiagnosticReport":
            resource["code"] = {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]}
    bundle["entry"] = [e for e in bundle["entry"] if "KSK-PL" not in str(e["resource"].get("code"))]
    [fragment] = map_fhir(bundle).fragments
    assert fragment.kind == "episode" and "_KSK_" not in fragment.document_id


def test_input_codes_are_data_with_their_sources() -> None:
    table = forms.codes()
    assert "loinc.org" in table["_source"] and table["local_prefix"] == "HBGW-KSK-"
    every = {f.name for form in forms.forms().values() for g in form.groups for f in g.fields}
    targets = {t for m in (table["loinc"], table["local"]) for ts in m.values() for t in ts}
    derivation_inputs = {"HA_TAM_THU", "HA_TAM_TRUONG", "KET_LUAN_TEXT"}
    assert targets - every <= derivation_inputs, "every other target is an element of some form"
    assert forms.elements_of_code("HBGW-KSK-NOI_KHOA_TUAN_HOAN_PL") == ("NOI_KHOA_TUAN_HOAN_PL",)
    assert forms.elements_of_code("8302-2") == ("CHIEU_CAO",) and forms.elements_of_code("2345-7") == ()


def test_the_khamsuckhoe_envelope_puts_each_group_in_its_sub_file_in_form_order() -> None:
    built = build_form(document("adult"), FACILITY, OPTIONS)
    envelope = ET.fromstring(build_envelope(built.xml, "4000000000123", date(2026, 11, 20)))
    assert envelope.tag == "KHAMSUCKHOE" and envelope.findtext("THONGTINDONVI/MACSKCB") == "4000000000123"
    assert (envelope.findtext("THONGTINHOSO/NGAYLAP"), envelope.findtext("THONGTINHOSO/SOLUONGHOSO")) == (
        "20261120", "1")
    files = {f.findtext("LOAIHOSO"): [g.tag for g in f.find("NOIDUNGFILE")]
             for f in envelope.iterfind("THONGTINHOSO/DANHSACHHOSO/HOSO/FILEHOSO")}
    assert list(files) == ["XML1", "XML2", "XML3", "XML7", "XML8", "XML11", "XML12"]
    assert files["XML3"] == ["KHAM_THE_LUC"] and files["XML12"] == ["KET_LUAN"]
    assert sum(len(groups) for groups in files.values()) == len(ET.fromstring(built.xml))
    assert [node.tag for node in envelope.find("THONGTINHOSO")][-1] == "CHUKYDONVI"
    assert "VIMES" in packaging()["_source"] and packaging()["inferred"] == ["XML5", "XML6", "XML8"]


def test_a_fhir_document_is_a_health_check_by_its_composition_type() -> None:
    bundle = fhir("child")
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Encounter":
            del resource["type"]
        if resource["resourceType"] == "DiagnosticReport":
            resource["code"] = {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]}
    composition = {"resourceType": "Composition", "status": "final", "date": "2026-11-20T09:30:00+07:00",
                   "type": {"coding": [{"system": "urn:hbgw:code:l", "code": "KSK-TE"}]},
                   "subject": {"reference": "urn:uuid:p"}, "author": [{"display": "Bệnh viện Demo"}],
                   "title": "Khám sức khỏe trẻ em"}
    bundle.update(type="document", timestamp="2026-11-20T09:30:00+07:00",
                  identifier={"system": "urn:hbgw:sender:demo", "value": "DOC-1"})
    bundle["entry"] = [{"fullUrl": "urn:uuid:c", "resource": composition}] + [
        {k: v for k, v in entry.items() if k != "request"} for entry in bundle["entry"]]
    result = map_fhir(bundle)
    assert not [i for i in result.issues if i.severity == "error"], result.issues
    [fragment] = result.fragments
    assert fragment.kind == "health_check" and "_KSK_" in fragment.document_id
    assert build_form(assemble(None, fragment), FACILITY, OPTIONS).form == "DUOI_6"
