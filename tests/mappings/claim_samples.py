"""The sample inpatient stay (HL7 v2) and outpatient BHYT visit (FHIR) of tests/mappings/samples, mapped."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import Document, FacilityInfo
from mappings.xml130.layout import layouts

SAMPLES = Path(__file__).resolve().parent / "samples"
INPATIENT_FACILITY = FacilityInfo("Bệnh viện Đa khoa tỉnh Nghệ An", "40001", "4000000000123", "2900325050",
                                  "4012345678")
OUTPATIENT_FACILITY = FacilityInfo("Phòng khám Đa khoa Đà Nẵng", "48002", "4800000000456", "0401234567",
                                   "4812345678")


def inpatient_messages() -> list[tuple[str, str]]:
    """(file name, message with \\r terminators) for each message of the stay, in the order sent."""
    return [(path.name, path.read_text(encoding="utf-8").replace("\n", "\r"))
            for path in sorted((SAMPLES / "inpatient").glob("*.hl7"))]


def site() -> dict[str, Any]:
    """The sample facilities' site mappings (as the gateway passes them from its settings)."""
    loaded: dict[str, Any] = json.loads((Path(__file__).resolve().parent / "site_sample.json").read_text("utf-8"))
    return loaded


def inpatient_document(upto: int | None = None) -> Document:
    """The stay's episode document after the first `upto` messages (all by default)."""
    document: Document | None = None
    for _, message in inpatient_messages()[:upto]:
        result = map_message(message)
        assert result.ok, result.issues
        document = assemble(document, result.fragments[0])
    assert document is not None
    return document


def outpatient_bundle() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / "outpatient" / "visit_bundle.json").read_text("utf-8"))
    return loaded


@cache
def outpatient_document() -> Document:
    result = map_fhir(outpatient_bundle())
    assert result.ok, result.issues
    return assemble(None, result.fragments[0])


def rows(table: str, xml: bytes) -> list[dict[str, str]]:
    """The rows of a rendered table as element -> text, in document order (a single-row table gives one)."""
    root = ET.fromstring(xml)
    row_tag = layouts()[table]["row"]
    nodes = list(root.iter(row_tag)) if row_tag else [root]
    return [{child.tag: child.text or "" for child in node} for node in nodes]


def order(table: str, xml: bytes) -> list[list[str]]:
    """The element names of each row, in the order they were written."""
    root = ET.fromstring(xml)
    row_tag = layouts()[table]["row"]
    nodes = list(root.iter(row_tag)) if row_tag else [root]
    return [[child.tag for child in node] for node in nodes]
