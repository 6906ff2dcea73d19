"""XML 130 conformance: element order against the public references, types and sizes, and the money sums."""
from __future__ import annotations

from decimal import Decimal

import pytest

from mappings.model import Document, FacilityInfo
from mappings.xml130 import ClaimResult, build_claim
from mappings.xml130.layout import field_names, fields, layouts, table_issues
from tests.mappings.claim_samples import (
    INPATIENT_FACILITY,
    OUTPATIENT_FACILITY,
    inpatient_document,
    order,
    outpatient_document,
    rows,
    site,
)

# Element order as published in tracnn/qlbv_public app/Services/XmlStructures.php ($expectedStructures3176) for
# XML1-XML8, and the QĐ 4750 check-in table (NATIONAL_FORMATS §1.3) for XML0: the test's own copy, so a change
# to layouts.json that drifts from the references fails here.
QLBV_3176 = {
    "XML0": "MA_LK STT MA_BN HO_TEN SO_CCCD NGAY_SINH GIOI_TINH MA_THE_BHYT MA_DKBD GT_THE_TU GT_THE_DEN "
            "MA_DOITUONG_KCB NGAY_VAO NGAY_VAO_NOI_TRU LY_DO_VNT MA_LY_DO_VNT MA_LOAI_KCB MA_CSKCB MA_DICH_VU "
            "TEN_DICH_VU MA_THUOC TEN_THUOC MA_VAT_TU TEN_VAT_TU NGAY_YL DU_PHONG",
    "XML1": "MA_LK STT MA_BN HO_TEN SO_CCCD NGAY_SINH GIOI_TINH NHOM_MAU MA_QUOCTICH MA_DANTOC MA_NGHE_NGHIEP DIA_CHI "
            "MATINH_CU_TRU MAHUYEN_CU_TRU MAXA_CU_TRU DIEN_THOAI MA_THE_BHYT MA_DKBD GT_THE_TU GT_THE_DEN "
            "NGAY_MIEN_CCT LY_DO_VV LY_DO_VNT MA_LY_DO_VNT CHAN_DOAN_VAO CHAN_DOAN_RV MA_BENH_CHINH MA_BENH_KT "
            "MA_BENH_YHCT MA_PTTT_QT MA_DOITUONG_KCB MA_NOI_DI MA_NOI_DEN MA_TAI_NAN NGAY_VAO NGAY_VAO_NOI_TRU "
            "NGAY_RA GIAY_CHUYEN_TUYEN SO_NGAY_DTRI PP_DIEU_TRI KET_QUA_DTRI MA_LOAI_RV GHI_CHU NGAY_TTOAN T_THUOC "
            "T_VTYT T_TONGCHI_BV T_TONGCHI_BH T_BNTT T_BNCCT T_BHTT T_NGUONKHAC T_BHTT_GDV NAM_QT THANG_QT "
            "MA_LOAI_KCB MA_KHOA MA_CSKCB MA_KHUVUC CAN_NANG CAN_NANG_CON NAM_NAM_LIEN_TUC NGAY_TAI_KHAM MA_HSBA "
            "MA_TTDV DU_PHONG",
    "XML2": "MA_LK STT MA_THUOC MA_PP_CHEBIEN MA_CSKCB_THUOC MA_NHOM TEN_THUOC DON_VI_TINH HAM_LUONG DUONG_DUNG "
            "DANG_BAO_CHE LIEU_DUNG CACH_DUNG SO_DANG_KY TT_THAU PHAM_VI TYLE_TT_BH SO_LUONG DON_GIA THANH_TIEN_BV "
            "THANH_TIEN_BH T_NGUONKHAC_NSNN T_NGUONKHAC_VTNN T_NGUONKHAC_VTTN T_NGUONKHAC_CL T_NGUONKHAC MUC_HUONG "
            "T_BHTT T_BNCCT T_BNTT MA_KHOA MA_BAC_SI MA_DICH_VU NGAY_YL NGAY_TH_YL MA_PTTT NGUON_CTRA VET_THUONG_TP "
            "DU_PHONG",
    "XML3": "MA_LK STT MA_DICH_VU MA_PTTT_QT MA_VAT_TU MA_NHOM GOI_VTYT TEN_VAT_TU TEN_DICH_VU MA_XANG_DAU "
            "DON_VI_TINH PHAM_VI SO_LUONG DON_GIA_BV DON_GIA_BH TT_THAU TYLE_TT_DV TYLE_TT_BH THANH_TIEN_BV "
            "THANH_TIEN_BH T_TRANTT MUC_HUONG T_NGUONKHAC_NSNN T_NGUONKHAC_VTNN T_NGUONKHAC_VTTN T_NGUONKHAC_CL "
            "T_NGUONKHAC T_BHTT T_BNTT T_BNCCT MA_KHOA MA_GIUONG MA_BAC_SI NGUOI_THUC_HIEN MA_BENH MA_BENH_YHCT "
            "NGAY_YL NGAY_TH_YL NGAY_KQ MA_PTTT VET_THUONG_TP PP_VO_CAM VI_TRI_TH_DVKT MA_MAY MA_HIEU_SP "
            "TAI_SU_DUNG DU_PHONG",
    "XML4": "MA_LK STT MA_DICH_VU MA_CHI_SO TEN_CHI_SO GIA_TRI DON_VI_DO MO_TA KET_LUAN NGAY_KQ MA_BS_DOC_KQ DU_PHONG",
    "XML5": "MA_LK STT DIEN_BIEN_LS GIAI_DOAN_BENH HOI_CHAN PHAU_THUAT THOI_DIEM_DBLS NGUOI_THUC_HIEN DU_PHONG",
    "XML7": "MA_LK SO_LUU_TRU MA_YTE MA_KHOA_RV NGAY_VAO NGAY_RA MA_DINH_CHI_THAI NGUYENNHAN_DINHCHI THOIGIAN_DINHCHI "
            "TUOI_THAI CHAN_DOAN_RV PP_DIEUTRI GHI_CHU MA_TTDV MA_BS TEN_BS NGAY_CT MA_CHA MA_ME MA_THE_TAM "
            "HO_TEN_CHA HO_TEN_ME SO_NGAY_NGHI NGOAITRU_TUNGAY NGOAITRU_DENNGAY DU_PHONG",
    "XML8": "MA_LK MA_LOAI_KCB HO_TEN_CHA HO_TEN_ME NGUOI_GIAM_HO DON_VI NGAY_VAO NGAY_RA CHAN_DOAN_VAO CHAN_DOAN_RV "
            "QT_BENHLY TOMTAT_KQ PP_DIEUTRI NGAY_SINHCON NGAY_CONCHET SO_CONCHET KET_QUA_DTRI GHI_CHU MA_TTDV NGAY_CT "
            "MA_THE_TAM DU_PHONG",
}
MONEY = ("THANH_TIEN_BV", "THANH_TIEN_BH", "T_NGUONKHAC", "T_BHTT", "T_BNCCT", "T_BNTT")


@pytest.fixture(scope="module")
def inpatient() -> ClaimResult:
    return build_claim(inpatient_document(), INPATIENT_FACILITY, site())


@pytest.fixture(scope="module")
def outpatient() -> ClaimResult:
    return build_claim(outpatient_document(), OUTPATIENT_FACILITY, site())


@pytest.mark.parametrize("table", sorted(QLBV_3176))
def test_field_list_matches_the_public_reference(table: str) -> None:
    assert field_names(table) == QLBV_3176[table].split()
    assert layouts()[table]["source"], "every table names its public source"
    assert set(layouts()[table]["required"]) <= set(field_names(table))


@pytest.mark.parametrize(("table", "name", "spec"), [
    ("XML1", "MA_LK", ("C", 100, 0)), ("XML1", "T_TONGCHI_BV", ("N", 15, 2)), ("XML1", "NGAY_VAO", ("C", 12, 0)),
    ("XML1", "MA_CSKCB", ("C", 5, 0)), ("XML1", "MA_BENH_CHINH", ("C", 7, 0)), ("XML1", "MAXA_CU_TRU", ("C", 5, 0)),
    ("XML1", "MA_DOITUONG_KCB", ("C", 4, 0)), ("XML1", "GT_THE_TU", ("C", 0, 0)), ("XML0", "GT_THE_TU", ("C", 8, 0)),
    ("XML2", "SO_LUONG", ("N", 10, 3)), ("XML2", "DON_GIA", ("N", 15, 3)), ("XML2", "THANH_TIEN_BV", ("N", 15, 2)),
    ("XML2", "DUONG_DUNG", ("C", 4, 0)), ("XML3", "DON_GIA_BV", ("N", 15, 3)), ("XML3", "MA_DICH_VU", ("C", 50, 0)),
    ("XML4", "MA_CHI_SO", ("C", 50, 0)), ("XML5", "THOI_DIEM_DBLS", ("C", 12, 0)), ("XML7", "NGAY_CT", ("C", 8, 0)),
])
def test_types_and_sizes(table: str, name: str, spec: tuple[str, int, int]) -> None:
    field = next(f for f in fields(table) if f.name == name)
    assert (field.kind, field.size, field.decimals) == spec


@pytest.mark.parametrize(("table", "row", "where", "code"), [
    ("XML2", {"SO_LUONG": "1.2345"}, "XML2[1].SO_LUONG", "too-long"),
    ("XML2", {"DON_GIA": "12,5"}, "XML2[1].DON_GIA", "invalid-number"),
    ("XML1", {"MA_CSKCB": "4000000000123"}, "XML1.MA_CSKCB", "too-long"),
    ("XML1", {"NGAY_VAO": "2026-04-05"}, "XML1.NGAY_VAO", "invalid-date"),
    ("XML3", {"T_BHTT": "1234567890123456"}, "XML3[1].T_BHTT", "too-long"),
    ("XML4", {"LOINC": "2345-7"}, "XML4[1].LOINC", "unknown-element"),
    ("XML1", {"MA_LK": ""}, "XML1.MA_LK", "required"),
])
def test_a_value_that_breaks_its_type_or_size_is_named(table: str, row: dict[str, str], where: str,
                                                        code: str) -> None:
    assert (where, code) in {(issue.location, issue.code) for issue in table_issues(table, [row])}


def _sample(name: str) -> tuple[ClaimResult, list[str]]:
    if name == "inpatient":
        return build_claim(inpatient_document(), INPATIENT_FACILITY, site()), \
            ["XML1", "XML2", "XML3", "XML4", "XML5", "XML7", "XML8"]
    return build_claim(outpatient_document(), OUTPATIENT_FACILITY, site()), \
        ["XML1", "XML2", "XML3", "XML4", "XML5", "XML8"]


@pytest.mark.parametrize("name", ["inpatient", "outpatient"])
def test_sample_claims_are_complete_and_pass_every_check(name: str) -> None:
    result, expected = _sample(name)
    assert sorted(result.tables) == expected
    assert result.ready and result.unmapped == () and result.issues == ()
    for table, xml in result.tables.items():
        assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')
        assert all(written == field_names(table) for written in order(table, xml))
        assert table_issues(table, rows(table, xml)) == []


def _sum(table_rows: list[dict[str, str]], name: str, only: set[str] | None = None) -> Decimal:
    return sum((Decimal(r[name]) for r in table_rows if only is None or r["MA_NHOM"] in only), Decimal(0))


@pytest.mark.parametrize("name", ["inpatient", "outpatient"])
def test_totals_equal_the_row_sums(name: str) -> None:
    result, _ = _sample(name)
    summary = rows("XML1", result.tables["XML1"])[0]
    drugs, services = rows("XML2", result.tables["XML2"]), rows("XML3", result.tables["XML3"])
    everything = drugs + services
    assert Decimal(summary["T_THUOC"]) == _sum(drugs, "THANH_TIEN_BV")
    assert Decimal(summary["T_VTYT"]) == _sum(services, "THANH_TIEN_BV", {"10", "11"})
    assert Decimal(summary["T_TONGCHI_BV"]) == _sum(everything, "THANH_TIEN_BV") > 0
    assert Decimal(summary["T_TONGCHI_BH"]) == _sum(everything, "THANH_TIEN_BH")
    for total in ("T_BNTT", "T_BNCCT", "T_BHTT", "T_NGUONKHAC"):
        assert Decimal(summary[total]) == _sum(everything, total)
    assert Decimal(summary["T_TONGCHI_BV"]) == sum(Decimal(summary[t]) for t in ("T_BNTT", "T_BNCCT", "T_BHTT",
                                                                               "T_NGUONKHAC"))
    for row in everything:
        assert Decimal(row["THANH_TIEN_BV"]) == sum(Decimal(row[t]) for t in ("T_BNTT", "T_BNCCT", "T_BHTT",
                                                                               "T_NGUONKHAC"))
        assert all(len(row[m].split(".")[1]) == 2 for m in MONEY)
    assert all(len(r["SO_LUONG"].split(".")[1]) == 3 and len(r["DON_GIA"].split(".")[1]) == 3 for r in drugs)


def test_inpatient_rows(inpatient: ClaimResult) -> None:
    drugs = rows("XML2", inpatient.tables["XML2"])
    amlodipine = next(r for r in drugs if r["MA_THUOC"] == "40.462")
    # the dispense (RDS) replaced the order (RDE), the administration (RAS) gave the execution time
    assert (amlodipine["SO_LUONG"], amlodipine["DON_GIA"], amlodipine["THANH_TIEN_BV"]) == ("5.000", "350.500",
                                                                                          "1752.50")
    assert (amlodipine["NGAY_YL"], amlodipine["NGAY_TH_YL"], amlodipine["CACH_DUNG"]) == (
        "202604050930", "202604060800", "Uống sau ăn sáng")
    # benefit level 3 (card HT3...): the fund pays 95 %, the patient co-pays 5 %, rounded half up
    assert (amlodipine["MUC_HUONG"], amlodipine["T_BHTT"], amlodipine["T_BNCCT"]) == ("95", "1664.88", "87.62")
    assert [r["MA_THUOC"] for r in drugs].count("40.462") == 1 and len(drugs) == 3
    services = {r["MA_DICH_VU"] or r["MA_VAT_TU"]: r for r in rows("XML3", inpatient.tables["XML3"])}
    assert (services["K02.1912"]["MA_GIUONG"], services["K02.1912"]["SO_LUONG"]) == ("G4", "6.000")
    assert services["N03.01.070"]["MA_NHOM"] == "10" and services["N03.01.070"]["TEN_VAT_TU"]
    assert services["02.1902"]["MA_PTTT_QT"] == "89.52"
    assert services["23.0075.1494"]["MA_KHOA"] == "K46"


def test_inpatient_summary_and_discharge(inpatient: ClaimResult) -> None:
    summary = rows("XML1", inpatient.tables["XML1"])[0]
    expected = {"MA_DKBD": "40001", "GT_THE_TU": "20260101", "GT_THE_DEN": "20261231", "MA_DOITUONG_KCB": "1.1",
                "MA_KHOA": "K02", "KET_QUA_DTRI": "2", "MA_LOAI_RV": "1", "MA_NGHE_NGHIEP": "00000",
                "CAN_NANG": "52.50", "NAM_QT": "2026", "THANG_QT": "4", "NGAY_VAO_NOI_TRU": "202604050830",
                "MA_LOAI_KCB": "03", "SO_NGAY_DTRI": "6", "MA_PTTT_QT": "89.52"}
    assert {key: summary[key] for key in expected} == expected
    discharge = rows("XML7", inpatient.tables["XML7"])[0]
    assert (discharge["TEN_BS"], discharge["MA_KHOA_RV"], discharge["NGAY_CT"]) == ("TRẦN THỊ BÌNH", "K02", "20260410")


def test_results_link_to_their_service_row(inpatient: ClaimResult) -> None:
    labs = rows("XML4", inpatient.tables["XML4"])
    charged = {r["MA_DICH_VU"]: r for r in rows("XML3", inpatient.tables["XML3"])}
    assert labs and all(r["MA_DICH_VU"] in charged for r in labs)
    assert charged["23.0075.1494"]["NGAY_KQ"] == max(r["NGAY_KQ"] for r in labs)
    assert {r["MA_CHI_SO"]: r["KET_LUAN"] for r in labs} == {"2345-7": "Bình thường", "2093-3": "Cao"}


def test_notes_go_to_the_clinical_course_or_the_summary(inpatient: ClaimResult) -> None:
    course = rows("XML5", inpatient.tables["XML5"])
    assert [r["THOI_DIEM_DBLS"] for r in course] == ["202604061630", "202604081030"]
    assert course[1]["HOI_CHAN"].startswith("Hội chẩn") and not course[0]["HOI_CHAN"]
    summary = rows("XML8", inpatient.tables["XML8"])[0]
    assert summary["QT_BENHLY"].startswith("Bệnh nhân nữ") and "Hội chẩn" not in summary["QT_BENHLY"]


def test_outpatient_visit(outpatient: ClaimResult) -> None:
    summary = rows("XML1", outpatient.tables["XML1"])[0]
    assert (summary["MA_LOAI_KCB"], summary["MA_LOAI_RV"], summary["KET_QUA_DTRI"], summary["SO_NGAY_DTRI"]) == (
        "01", "1", "7", "0")
    assert (summary["MA_DKBD"], summary["MA_DOITUONG_KCB"], summary["MA_KHOA"]) == ("48001", "1.1", "K01")
    metformin = rows("XML2", outpatient.tables["XML2"])[0]
    assert (metformin["SO_LUONG"], metformin["MUC_HUONG"], metformin["T_BHTT"], metformin["DUONG_DUNG"]) == (
        "60.000", "80", "20160.00", "1.01")
    assert "XML7" not in outpatient.tables


def test_a_site_code_not_mapped_yet_is_named_not_refused() -> None:
    document = inpatient_document()
    partial = {**site(), "wards": {"KHOA-XN": "K46"}, "items": {k: v for k, v in site()["items"].items()
                                                                if k != "BKT-5ML"}}
    result = build_claim(document, INPATIENT_FACILITY, partial)
    assert not result.ready and result.issues == ()
    assert result.unmapped == ("item:BKT-5ML", "ward:NOI-TM")
    assert build_claim(document, INPATIENT_FACILITY, site()).ready  # the same document, once mapped


def test_nothing_mapped_names_every_code() -> None:
    result = build_claim(outpatient_document(), OUTPATIENT_FACILITY, None)
    assert set(result.unmapped) == {"ward:PK-NOI", "ward:KHOA-XN", "item:KB-NOI", "item:XN-GLU", "item:METF500",
                                    "lab:2345-7", "patient-category:BHYT"} - {"ward:KHOA-XN"}


def test_a_patient_without_a_card_pays_everything() -> None:
    document = outpatient_document()
    bundle = document.bundle
    entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Coverage"]
    patient = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient")
    uninsured = {**patient, "identifier": [i for i in patient["identifier"] if i.get("system") != "urn:hbgw:id:bhyt"]}
    entries = [{**e, "resource": uninsured} if e["resource"] is patient else e for e in entries]
    result = build_claim(Document(document.document_id, 1, "episode", "k", {**bundle, "entry": entries}),
                         OUTPATIENT_FACILITY, site())
    summary = rows("XML1", result.tables["XML1"])[0]
    assert result.ready and summary["T_BHTT"] == summary["T_TONGCHI_BH"] == "0.00"
    assert summary["T_BNTT"] == summary["T_TONGCHI_BV"] != "0.00"


def test_a_tampered_total_fails_the_sum_check() -> None:
    from mappings.xml130.money import sum_issues, totals
    drug = {"THANH_TIEN_BV": "100.00", "THANH_TIEN_BH": "100.00", "T_NGUONKHAC": "0.00", "T_BHTT": "80.00",
            "T_BNCCT": "20.00", "T_BNTT": "0.00", "MA_NHOM": "4"}
    good = totals([drug], [])
    assert sum_issues(good, [drug], []) == []
    issues = sum_issues({**good, "T_BHTT": "81.00"}, [drug], [{**drug, "T_BNTT": "1.00", "MA_NHOM": "13"}])
    assert {"XML1.T_BHTT", "XML3[1].THANH_TIEN_BV", "XML1.T_TONGCHI_BV"} <= {i.location for i in issues}


def test_facility_codes_come_from_the_facility() -> None:
    other = FacilityInfo("Khác", "40002", "4000000000999")
    summary = rows("XML1", build_claim(inpatient_document(), other, site()).tables["XML1"])[0]
    assert summary["MA_CSKCB"] == "40002"


def test_an_episode_without_a_ward_is_incomplete_not_a_site_gap() -> None:
    document = inpatient_document(upto=1)
    bundle = {**document.bundle, "entry": [
        {**e, "resource": {k: v for k, v in e["resource"].items() if k != "location"}}
        if e["resource"]["resourceType"] == "Encounter" else e for e in document.bundle["entry"]]}
    result = build_claim(Document(document.document_id, 1, "episode", "k", bundle), INPATIENT_FACILITY, site())
    assert result.unmapped == () and ("XML1.MA_KHOA", "required") in {(i.location, i.code) for i in result.issues}


def test_the_check_in_sends_the_xml0_field_list_kept_here() -> None:
    from mappings.xml130.checkin import layout as checkin_layout

    assert checkin_layout()["fields"] == field_names("XML0")
    assert (checkin_layout()["root"], checkin_layout()["list"], checkin_layout()["row"]) == (
        layouts()["XML0"]["root"], layouts()["XML0"]["list"], layouts()["XML0"]["row"])
