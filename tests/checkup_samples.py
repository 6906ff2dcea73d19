"""Sample health checks for each QĐ 1551/2062 form (adult, pupil 6-<18, child under 6, driver), as HL7 and FHIR.

Made-up people: names, CCCD numbers (shaped to their birth year and sex), addresses and licences are
invented. The driver is the corpus message /work/shared/corpus/hl7v2/oru_r01_health_check.hl7.
"""
from __future__ import annotations

import copy
from typing import Any

from tests.mappings.conftest import corpus_text

FACILITY_ID = "4000000000123"
LOINC = "http://loinc.org"
LOCAL = "urn:hbgw:code:l"
DOCTOR = "CCHN-000111-HN"
EYE_DOCTOR = "CCHN-000222-HN"

PEOPLE: dict[str, dict[str, Any]] = {
    "adult": {"form": "TREN_18", "visit": "KSK-A-0001", "name": ("NGUYỄN", "VĂN AN"), "birth": "19850312",
              "sex": "M", "cccd": "001085012345", "order": "KSK-DK^Khám sức khỏe định kỳ"},
    "pupil": {"form": "DUOI_18", "visit": "KSK-P-0001", "name": ("TRẦN", "THU HÀ"), "birth": "20120901",
              "sex": "F", "cccd": "001312000777", "order": "KSK-HS^Khám sức khỏe học sinh"},
    "child": {"form": "DUOI_6", "visit": "KSK-C-0001", "name": ("PHẠM", "MINH KHÔI"), "birth": "20220310",
              "sex": "M", "cccd": "001222004444", "order": "KSK-TE^Khám sức khỏe trẻ em"},
}
# (code, HL7 type, value, unit, responsible observer): what each sample's HIS sends in OBX.
RESULTS: dict[str, list[tuple[str, str, str, str, str]]] = {
    "adult": [("8302-2", "NM", "170", "cm", ""), ("29463-7", "NM", "65", "kg", ""),
              ("8480-6", "NM", "120", "mm[Hg]", ""), ("8462-4", "NM", "80", "mm[Hg]", ""),
              ("8867-4", "NM", "75", "/min", ""), ("HBGW-KSK-KHONG_KINH_MAT_PHAI", "ST", "10/10", "", EYE_DOCTOR),
              ("HBGW-KSK-KHONG_KINH_MAT_TRAI", "ST", "9/10", "", EYE_DOCTOR),
              ("HBGW-KSK-KHAM_MAT_PL", "CWE", "1", "", EYE_DOCTOR),
              ("HBGW-KSK-DOI_TUONG", "CWE", "13", "", ""), ("HBGW-KSK-NGUON_KINH_PHI", "CWE", "4", "", ""),
              ("2345-7", "NM", "5.4", "mmol/L", ""), ("KSK-PL", "CWE", "I", "", ""),
              ("KSK-KL", "TX", "Đủ sức khỏe làm việc", "", "")],
    "pupil": [("8302-2", "NM", "158", "cm", ""), ("29463-7", "NM", "47.5", "kg", ""),
              ("8480-6", "NM", "110", "mm[Hg]", ""), ("8462-4", "NM", "70", "mm[Hg]", ""),
              ("8867-4", "NM", "82", "/min", ""), ("HBGW-KSK-NHI_KHOA_HO_HAP", "ST", "Bình thường", "", DOCTOR),
              ("HBGW-KSK-DOI_TUONG", "CWE", "11", "", ""), ("HBGW-KSK-NGUON_KINH_PHI", "CWE", "2", "", ""),
              ("KSK-PL", "CWE", "II", "", ""), ("KSK-KL", "TX", "Khỏe, cận thị nhẹ", "", "")],
    "child": [("8302-2", "NM", "102", "cm", ""), ("29463-7", "NM", "16.2", "kg", ""),
              ("8310-5", "NM", "36.8", "Cel", ""), ("HBGW-KSK-NOI_CAU_HOAN_CHINH", "CWE", "1", "", DOCTOR),
              ("HBGW-KSK-BINH_THUONG", "CWE", "1", "", ""), ("HBGW-KSK-DOI_TUONG", "CWE", "10", "", ""),
              ("HBGW-KSK-NGUON_KINH_PHI", "CWE", "2", "", ""), ("KSK-KL", "TX", "Phát triển bình thường", "", "")],
}


def hl7(kind: str, visit: str | None = None) -> str:
    """The sample as one ORU^R01 message (\\r separated); `visit` renames the visit for a fresh document."""
    if kind == "driver":
        message = corpus_text("oru_r01_health_check.hl7")
        return message.replace("KSK26000042", visit) if visit else message
    person, doctor = PEOPLE[kind], f"{DOCTOR}^TRẦN^THỊ BÌNH^^^BS"
    number = visit or person["visit"]
    family, given = person["name"]
    lines = [
        (f"MSH|^~\\&|KSK_HIS|BVDK^{FACILITY_ID}^L|HBGW|BYT|20261120100000+0700||ORU^R01^ORU_R01|{number}-M|P|2.5"
         "|||||VNM|UNICODE UTF-8"),
        (f"PID|1||{number}^^^BVDK^MR~{person['cccd']}^^^BCA^NNVNM||{family}^{given}^^^^^L||{person['birth']}|"
         f"{person['sex']}|||Số 1 Tràng Tiền^^Phường Hoàn Kiếm^Hà Nội^^VNM^H||0912000111^PRN^PH|||||||||01^Kinh^VNDT"),
        f"PV1|1|O|KSK^P01^^BVDK||||{doctor}|||MED|||||||{doctor}|OP|{number}" + "|" * 25 + "20261120080000+0700",
        (f"OBR|1|{number}|{number}|{person['order']}^L|||20261120080000+0700|||||||||{doctor}||||||"
         "20261120093000+0700|||F"),
    ]
    for index, (code, kind_, value, unit, observer) in enumerate(RESULTS[kind], start=1):
        system = "LN" if code[0].isdigit() else "L"
        coded = f"{value}^^L" if kind_ == "CWE" else value
        lines.append(f"OBX|{index}|{kind_}|{code}^^{system}||{coded}|{unit}|||||F|||||{observer}")
    return "\r".join(lines)


def _observation(code: str, value: str, unit: str, observer: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                                "code": {"coding": [{"system": LOINC if code[0].isdigit() else LOCAL, "code": code}]},
                                "subject": {"reference": "urn:uuid:p"}, "encounter": {"reference": "urn:uuid:e"},
                                "effectiveDateTime": "2026-11-20T08:00:00+07:00"}
    if unit:
        resource["valueQuantity"] = {"value": float(value) if "." in value else int(value), "unit": unit,
                                     "system": "http://unitsofmeasure.org", "code": unit}
    elif code in ("KSK-PL",) or code.endswith(("_PL", "DOI_TUONG", "NGUON_KINH_PHI", "BINH_THUONG", "CHINH")):
        resource["valueCodeableConcept"] = {"coding": [{"system": LOCAL, "code": value}]}
    else:
        resource["valueString"] = value
    if observer:
        resource["performer"] = [{"identifier": {"system": "urn:hbgw:id:practitioner-licence", "value": observer}}]
    return resource


def fhir(kind: str, visit: str | None = None) -> dict[str, Any]:
    """The sample as a FHIR transaction Bundle: Patient, Encounter (type KSK), Observations, DiagnosticReport."""
    if kind == "driver":
        person = {"visit": "KSK26000042", "name": ("LÊ", "THỊ HOA"), "birth": "19960723", "sex": "F",
                  "cccd": "031196004321", "order": "KSK-LX^Khám sức khỏe lái xe"}
        results = [("8480-6", "NM", "118", "mm[Hg]", ""), ("8462-4", "NM", "76", "mm[Hg]", ""),
                   ("8867-4", "NM", "72", "/min", ""), ("KSK-TAM", "ST", "Bình thường", "", ""),
                   ("KSK-PL", "CWE", "II", "", ""), ("KSK-KL", "TX", "Đủ điều kiện sức khỏe lái xe hạng B", "", "")]
    else:
        person, results = PEOPLE[kind], RESULTS[kind]
    birth = person["birth"]
    patient = {"resourceType": "Patient",
               "identifier": [{"system": "urn:hbgw:id:cccd", "value": person["cccd"],
                               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                    "code": "NI"}]}}],
               "name": [{"family": person["name"][0], "given": [person["name"][1]]}],
               "gender": "male" if person["sex"] == "M" else "female",
               "birthDate": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
               "extension": [{"url": "urn:hbgw:ext:ethnicity",
                              "valueCoding": {"system": "urn:hbgw:vn:ethnicity", "code": "01", "display": "Kinh"}}],
               "address": [{"line": ["Số 1 Tràng Tiền"], "city": "Phường Hoàn Kiếm", "state": "Hà Nội"}]}
    order_code, order_text = person["order"].split("^")
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "identifier": [{"system": f"urn:hbgw:visit:{FACILITY_ID}", "value": visit or person["visit"]}],
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "type": [{"coding": [{"system": LOCAL, "code": order_code}], "text": order_text}],
                 "subject": {"reference": "urn:uuid:p"},
                 "participant": [{"individual": {"identifier": {"system": "urn:hbgw:id:practitioner-licence",
                                                                "value": DOCTOR}}}],
                 "period": {"start": "2026-11-20T08:00:00+07:00", "end": "2026-11-20T09:30:00+07:00"}}
    entries = [("urn:uuid:p", patient), ("urn:uuid:e", encounter)]
    entries += [(f"urn:uuid:o{i}", _observation(code, value, unit, who))
                for i, (code, _, value, unit, who) in enumerate(results)]
    report = {"resourceType": "DiagnosticReport", "status": "final",
              "code": {"coding": [{"system": LOCAL, "code": order_code}], "text": order_text},
              "subject": {"reference": "urn:uuid:p"}, "encounter": {"reference": "urn:uuid:e"},
              "effectiveDateTime": "2026-11-20T08:00:00+07:00", "issued": "2026-11-20T09:30:00+07:00",
              "resultsInterpreter": [{"identifier": {"system": "urn:hbgw:id:practitioner-licence", "value": DOCTOR}}]}
    entries.append(("urn:uuid:r", report))
    return copy.deepcopy({"resourceType": "Bundle", "type": "transaction",
                          "entry": [{"fullUrl": url, "resource": resource,
                                     "request": {"method": "POST", "url": resource["resourceType"]}}
                                    for url, resource in entries]})
