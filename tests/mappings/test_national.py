"""National encodings: XML 130 tables and the GIAMDINHHS envelope (health-check forms: test_checkup.py)."""
from __future__ import annotations

import base64
import dataclasses
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from functools import reduce

import pytest

from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import Document, FacilityInfo, Fragment
from mappings.xml130 import build_envelope, build_tables
from mappings.xml130.layout import field_names, layouts
from tests.mappings.conftest import CORPUS, corpus_text, replace_field

FACILITY = FacilityInfo("Bệnh viện Đa khoa tỉnh Nghệ An", "40001", "4000000000123", "2900325050", "4012345678")
SITE = {"lab_tests": {code: {"service": "23.0075.1494", "indicator": f"QD1227-{code}"}
                      for code in ("2345-7", "4548-4", "2160-0", "2093-3", "2571-8", "1742-6", "18776-5")}}
EPISODE = ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a08_update.hl7", "adt_a03_discharge.hl7",
           "mdm_t02_summary.hl7")


def fragment(name: str) -> Fragment:
    return map_message(corpus_text(name)).fragments[0]


def document(*names: str) -> Document:
    return reduce(lambda doc, name: assemble(doc, fragment(name)), names, None)  # type: ignore[arg-type, return-value]


def fields(xml: bytes, row: str | None = None) -> dict[str, str]:
    root = ET.fromstring(xml)
    node = root.find(f".//{row}") if row else root
    assert node is not None
    return {child.tag: child.text or "" for child in node}


@pytest.fixture(scope="module")
def episode() -> Document:
    return document(*EPISODE)


@pytest.mark.parametrize(("names", "expected"), [
    (EPISODE, ["XML1", "XML4", "XML7", "XML8"]),
    (("adt_a01_admit.hl7",), ["XML1", "XML8"]),
    (("adt_a01_admit.hl7", "oru_r01_lab.hl7"), ["XML1", "XML4", "XML8"]),
    (("adt_a03_discharge.hl7",), ["XML1", "XML7", "XML8"]),
    (("oru_r01_health_check.hl7",), []),
    (("vxu_v04_immunization.hl7",), []),
])
def test_which_tables_apply(names: tuple[str, ...], expected: list[str]) -> None:
    assert sorted(build_tables(document(*names), FACILITY)) == expected


def test_every_table_has_its_layout_in_order(episode: Document) -> None:
    for name, xml in build_tables(episode, FACILITY).items():
        assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
        layout = layouts()[name]
        assert list(fields(xml, layout["row"])) == field_names(name)


def test_xml1_values(episode: Document) -> None:
    xml1 = fields(build_tables(episode, FACILITY)["XML1"])
    expected = {
        "MA_LK": "4000000000123_VV26000456", "MA_BN": "BN26001234", "HO_TEN": "NGUYỄN VĂN AN",
        "SO_CCCD": "040085012345", "NGAY_SINH": "198502140000", "GIOI_TINH": "1", "MA_DANTOC": "01",
        "MA_QUOCTICH": "000",
        "MATINH_CU_TRU": "40", "MA_THE_BHYT": "GD4404012345678", "MA_BENH_CHINH": "I10", "MA_BENH_KT": "E78.2",
        "CHAN_DOAN_VAO": "Tăng huyết áp vô căn (nguyên phát)", "NGAY_VAO": "202603120825",
        "NGAY_RA": "202603181430", "SO_NGAY_DTRI": "7", "MA_LOAI_RV": "1", "MA_LOAI_KCB": "03",
        "MA_CSKCB": "40001", "CAN_NANG": "68.00",
    }
    assert {key: xml1[key] for key in expected} == expected


def test_xml4_rows_keep_values_and_units(episode: Document) -> None:
    root = ET.fromstring(build_tables(episode, FACILITY, SITE)["XML4"])
    rows = [{c.tag: c.text or "" for c in row} for row in root.iter("CHI_TIET_CLS")]
    assert [r["STT"] for r in rows] == [str(n) for n in range(1, 8)]
    glucose = next(r for r in rows if r["MA_CHI_SO"] == "QD1227-2345-7")
    assert (glucose["GIA_TRI"], glucose["DON_VI_DO"], glucose["MO_TA"], glucose["KET_LUAN"], glucose["NGAY_KQ"]) == (
        "7.8", "mmol/L", "3.9-6.4", "Cao", "202603121010")
    assert glucose["MA_DICH_VU"] == "23.0075.1494"
    assert next(r for r in rows if r["MA_CHI_SO"] == "QD1227-1742-6")["DON_VI_DO"] == "U/L"


@pytest.mark.parametrize(("value", "written"), [("7.8", "7.8"), ("<5.2", "<5.2"), (">= 30", ">=30")])
def test_xml4_writes_a_comparator_before_the_number(value: str, written: str) -> None:
    message = corpus_text("oru_r01_lab.hl7").replace("||7.8|mmol/L|", f"||{value}|mmol/L|")
    root = ET.fromstring(build_tables(assemble(None, map_message(message).fragments[0]), FACILITY, SITE)["XML4"])
    glucose = next(row for row in root.iter("CHI_TIET_CLS") if row.findtext("MA_CHI_SO") == "QD1227-2345-7")
    assert glucose.findtext("GIA_TRI") == written


def test_vital_signs_in_a_result_message_are_not_lab_rows() -> None:
    message = corpus_text("oru_r01_lab.hl7").replace("OBX|1|NM|2345-7^Glucose máu^LN||7.8|mmol/L|3.9-6.4|H|||F|||",
                                                     "OBX|1|NM|8867-4^Nhịp tim^LN||88|/min|60-100|N|||F|||")
    root = ET.fromstring(build_tables(assemble(None, map_message(message).fragments[0]), FACILITY)["XML4"])
    codes = [row.findtext("MA_CHI_SO") for row in root.iter("CHI_TIET_CLS")]
    assert len(codes) == 6 and "8867-4" not in codes


def test_xml7_and_xml8(episode: Document) -> None:
    tables = build_tables(episode, FACILITY)
    xml7, xml8 = fields(tables["XML7"]), fields(tables["XML8"])
    assert (xml7["MA_BS"], xml7["NGAY_RA"], xml7["MA_YTE"]) == ("CCHN-000123-NA", "202603181430", "BN26001234")
    assert xml7["MA_TTDV"] == xml8["MA_TTDV"] == fields(tables["XML1"])["MA_TTDV"] == "4012345678"
    assert xml8["QT_BENHLY"].startswith("Bệnh nhân nam 41 tuổi") and xml8["QT_BENHLY"].count("\n") == 3
    assert "Glucose máu: 7.8 mmol/L" in xml8["TOMTAT_KQ"] and xml8["DON_VI"] == FACILITY.name


def test_local_diagnosis_codes_never_reach_the_icd10_fields() -> None:
    message = corpus_text("adt_a03_discharge.hl7").replace("DG1|1||I10^Tăng huyết áp vô căn (nguyên phát)^I10",
                                                           "DG1|1||NOI-07^Chẩn đoán nội bộ^L")
    doc = assemble(None, map_message(message).fragments[0])
    local = next(e["resource"] for e in doc.bundle["entry"]
                 if e["resource"]["resourceType"] == "Condition" and "NOI-07" in json.dumps(e["resource"]))
    assert local["code"]["coding"][0]["system"] == "urn:hbgw:code:4000000000123"
    xml1 = fields(build_tables(doc, FACILITY)["XML1"])
    assert (xml1["MA_BENH_CHINH"], xml1["MA_BENH_KT"]) == ("E78.2", "")


@pytest.mark.parametrize(("disposition", "kind", "result"), [("01", "1", "7"), ("02", "2", "7"), ("07", "4", "7"),
                                                             ("20", "1", "5"), ("", "1", "7"), ("TV", "3", "7"),
                                                             ("CTBN", "5", "7")])
def test_discharge_codes(disposition: str, kind: str, result: str) -> None:
    message = replace_field(corpus_text("adt_a03_discharge.hl7"), "PV1", 36, disposition)
    xml1 = fields(build_tables(assemble(None, map_message(message).fragments[0]), FACILITY)["XML1"])
    assert (xml1["MA_LOAI_RV"], xml1["KET_QUA_DTRI"]) == (kind, result)


@pytest.mark.parametrize(("pv2", "reason"), [("PV2|||^Đau đầu, chóng mặt", "Đau đầu, chóng mặt"),
                                             ("PV2|||R51^Đau đầu^I10", "Đau đầu"), ("PV2|||", "")])
def test_admission_reason_from_pv2(pv2: str, reason: str) -> None:
    message = corpus_text("adt_a01_admit.hl7").replace("\rDG1|", f"\r{pv2}\rDG1|", 1)
    xml1 = fields(build_tables(assemble(None, map_message(message).fragments[0]), FACILITY)["XML1"])
    assert xml1["LY_DO_VV"] == reason


def test_inpatient_days_wait_for_discharge() -> None:
    xml1 = fields(build_tables(document("adt_a01_admit.hl7"), FACILITY)["XML1"])
    assert (xml1["MA_LOAI_KCB"], xml1["SO_NGAY_DTRI"], xml1["NGAY_RA"]) == ("03", "", "")


@pytest.mark.parametrize(("birth", "expected"), [("19850214", "198502140000"), ("1985", "198500000000"),
                                                 ("198502", "198502000000")])
def test_birth_date_precision(birth: str, expected: str) -> None:
    message = replace_field(corpus_text("adt_a01_admit.hl7"), "PID", 7, birth)
    doc = assemble(None, map_message(message).fragments[0])
    assert fields(build_tables(doc, FACILITY)["XML1"])["NGAY_SINH"] == expected


@pytest.mark.parametrize(("state", "code"), [
    ("Nghệ An", "40"), ("Thành phố Hồ Chí Minh", "79"), ("TP. Hồ Chí Minh", "79"), ("Bình Dương", "79"),
    ("Thừa Thiên Huế", "46"), ("Huế", "46"), ("Quảng Bình", "44"), ("Hà Giang", "08"), ("Tỉnh Bắc Kạn", "19"),
    ("Đắk Nông", "68"), ("Atlantis", ""), ("", ""),
])
def test_address_province_uses_the_34_provinces(state: str, code: str) -> None:
    message = corpus_text("adt_a01_admit.hl7").replace("^^Phường Vinh Hưng^Nghệ An^^VNM^H",
                                                       f"^^Phường Vinh Hưng^{state}^^VNM^H")
    doc = assemble(None, map_message(message).fragments[0])
    assert fields(build_tables(doc, FACILITY)["XML1"])["MATINH_CU_TRU"] == code


@pytest.mark.parametrize(("field", "nationality", "code"), [
    (26, "VNM", "000"), (26, "vnm", "000"), (26, "LAO", ""), (26, "", ""), (28, "VN", "000")])
def test_nationality(field: int, nationality: str, code: str) -> None:
    message = replace_field(replace_field(corpus_text("adt_a01_admit.hl7"), "PID", 26, ""), "PID", field, nationality)
    doc = assemble(None, map_message(message).fragments[0])
    assert fields(build_tables(doc, FACILITY)["XML1"])["MA_QUOCTICH"] == code


def test_times_are_written_in_vietnam_time() -> None:
    message = replace_field(corpus_text("adt_a01_admit.hl7"), "PV1", 44, "20260312012500+0000")
    doc = assemble(None, map_message(message).fragments[0])
    assert fields(build_tables(doc, FACILITY)["XML1"])["NGAY_VAO"] == "202603120825"


@pytest.mark.parametrize("event", ["A11"])
def test_cancelled_episode_gives_no_tables(event: str) -> None:
    admit = corpus_text("adt_a01_admit.hl7")
    cancel = map_message(replace_field(admit, "MSH", 9, f"ADT^{event}^ADT_A09")).fragments[0]
    assert build_tables(assemble(document("adt_a01_admit.hl7"), cancel), FACILITY) == {}


def test_characters_xml_cannot_carry_are_dropped() -> None:
    """HL7 v2 refuses control characters at the screen; other inputs (FHIR strings) still meet the encoder."""
    fragment = map_message(corpus_text("mdm_t02_summary.hl7")).fragments[0]
    text = json.dumps(fragment.resources, ensure_ascii=False).replace("Bệnh nhân nam", "Bệnh\\u0001 nhân\\u000b nam")
    doc = assemble(None, dataclasses.replace(fragment, resources=tuple(json.loads(text))))
    summary = fields(build_tables(doc, FACILITY)["XML8"])["QT_BENHLY"]
    assert summary.startswith("Bệnh nhân nam 41 tuổi")


def test_fhir_episode_gives_xml1_and_xml8() -> None:
    with open(CORPUS / "fhir" / "transaction_outpatient_visit.json", encoding="utf-8") as handle:
        bundle = json.load(handle)
    doc = assemble(None, map_fhir(bundle).fragments[0])
    tables = build_tables(doc, FACILITY)
    assert sorted(tables) == ["XML1", "XML8"]
    xml1 = fields(tables["XML1"])
    assert (xml1["MA_BENH_CHINH"], xml1["GIOI_TINH"], xml1["MATINH_CU_TRU"], xml1["MA_LOAI_KCB"]) == (
        "J06.9", "2", "48", "01")
    assert xml1["NGAY_VAO"] == "202604020810" and xml1["LY_DO_VV"] == "Ho, sốt 3 ngày"
    assert xml1["SO_NGAY_DTRI"] == "0"


def test_envelope_shape_and_content(episode: Document) -> None:
    tables = build_tables(episode, FACILITY)
    created = datetime(2026, 3, 18, 17, 30, tzinfo=UTC)
    envelope = build_envelope(tables, FACILITY, created)
    root = ET.fromstring(envelope)
    assert root.tag == "GIAMDINHHS"
    assert [child.tag for child in root] == ["THONGTINDONVI", "THONGTINHOSO", "CHUKYDONVI"]
    assert root.findtext("THONGTINDONVI/MACSKCB") == "40001"
    assert root.findtext("THONGTINHOSO/NGAYLAP") == "20260319"  # 17:30 UTC is already the 19th in Vietnam
    assert root.findtext("THONGTINHOSO/SOLUONGHOSO") == "1"
    files = root.findall("THONGTINHOSO/DANHSACHHOSO/HOSO/FILEHOSO")
    assert [f.findtext("LOAIHOSO") for f in files] == ["XML1", "XML4", "XML7", "XML8"]
    assert all(base64.b64decode(f.findtext("NOIDUNGFILE") or "") == tables[f.findtext("LOAIHOSO") or ""]
               for f in files)
    signature = root.find("CHUKYDONVI")
    assert signature is not None and len(signature) == 0 and not (signature.text or "").strip()
    assert envelope.rstrip().endswith(b"<CHUKYDONVI /></GIAMDINHHS>")


@pytest.mark.parametrize("tables", [{}, {"XML99": b"<x/>"}, {"xml1": b"<x/>"}])
def test_envelope_refuses_bad_table_names(tables: dict[str, bytes]) -> None:
    with pytest.raises(ValueError):
        build_envelope(tables, FACILITY, datetime(2026, 3, 18, tzinfo=timezone(timedelta(hours=7))))
