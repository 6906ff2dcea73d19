"""FHIR strings carry no control characters, and names and addresses keep to their national lengths."""
from __future__ import annotations

from typing import Any

import pytest

from mappings.fhir_in.limits import limit_issues
from mappings.vn.lengths import fhir_element_lengths, hl7_field_lengths


def patient(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Võ", "given": ["Thị", "Mai"]}],
            "address": [{"line": ["12 Lê Lợi"], "city": "Đà Nẵng"}], **changes}


@pytest.mark.parametrize("resource, expected", [
    (patient(), []),
    (patient(name=[{"family": "N" * 150, "given": ["A" * 104]}]), []),
    (patient(name=[{"family": "N" * 150, "given": ["A" * 105]}]), [("Patient.name[0]", "field-too-long")]),
    (patient(name=[{"text": "N" * 256, "family": "N"}]), [("Patient.name[0]", "field-too-long")]),
    (patient(address=[{"line": ["D" * 1024]}]), []),
    (patient(address=[{"line": ["D" * 1000, "E" * 30]}]), [("Patient.address[0]", "field-too-long")]),
    (patient(name=[{"family": "Võ\x00"}]), [("Patient.name[0].family", "control-character")]),
    (patient(name=[{"family": "Võ\u0085"}]), [("Patient.name[0].family", "control-character")]),
    (patient(name=[{"family": "Võ\tThị\r\nMai"}]), []),
    (patient(**{"x\x00y": "1"}), [("Patient", "control-character")]),
    ({"resourceType": "Bundle", "entry": [{"resource": patient()}, {"resource": patient(
        name=[{"family": "N" * 300}], gender="\x1b[2J")}]},
     [("Bundle.entry[1].resource.name[0]", "field-too-long"), ("Bundle.entry[1].resource.gender", "control-character")]),
    ({"resourceType": "Observation", "valueString": "x" * 5000}, []),  # no national length: the API size limit
])
def test_limit_issues(resource: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    issues = limit_issues(resource)
    assert [(issue.location, issue.code) for issue in issues] == expected
    assert all("\x00" not in issue.message and "NNNN" not in issue.message for issue in issues)


def test_lengths_come_from_the_data_file() -> None:
    assert hl7_field_lengths() == {"MSH-10": 199, "PID-5": 255, "PID-11": 1024}
    assert fhir_element_lengths() == {"Patient.name": 255, "Patient.address": 1024}
