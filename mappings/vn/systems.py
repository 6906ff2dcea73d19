"""Identifier and code systems used in the canonical FHIR form; the one place that names them."""
from __future__ import annotations

import re

CCCD = "urn:hbgw:id:cccd"
BHYT = "urn:hbgw:id:bhyt"
MOH_FACILITY = "urn:hbgw:id:moh-facility"
PRACTITIONER_LICENCE = "urn:hbgw:id:practitioner-licence"
DOCUMENT = "urn:hbgw:document"
ETHNICITY = "urn:hbgw:vn:ethnicity"
ETHNICITY_EXTENSION = "urn:hbgw:ext:ethnicity"
NATIONALITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-nationality"
ISO_COUNTRY = "urn:iso:std:iso:3166"
SECTION = "urn:hbgw:section"
DIAGNOSIS_RANK_EXTENSION = "urn:hbgw:ext:diagnosis-rank"
HEALTH_CLASS = "urn:hbgw:vn:health-class"
BHXH_FACILITY = "urn:hbgw:id:bhxh-facility"  # 5-character MA_CSKCB codes (MA_DKBD, the registered facility)
PATIENT_CATEGORY_EXTENSION = "urn:hbgw:ext:patient-category"  # Encounter: financial class (PV1-20)
TREATMENT_RESULT_EXTENSION = "urn:hbgw:ext:treatment-result"  # Encounter: KET_QUA_DTRI 1-8 (PV2-24)
TREATMENT_RESULT = "urn:hbgw:vn:treatment-result"
VISIT_TYPE = "urn:hbgw:vn:visit-type"  # Encounter.type: MA_LOAI_KCB 01-16 when the sender states it
BED_EXTENSION = "urn:hbgw:ext:bed"  # ChargeItem: the bed of a bed-day line (MA_GIUONG)

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0052 = "http://terminology.hl7.org/CodeSystem/v2-0052"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"
V2_0270 = "http://terminology.hl7.org/CodeSystem/v2-0270"  # document type (TXA-2): PR progress note, DS summary
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
OBS_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

HL7_ICD10_NAMES = frozenset({"", "I10", "I10C", "ICD10", "ICD-10"})  # DG1-3.3 values read as ICD-10
HL7_CODING_SYSTEMS = {"LN": LOINC, "I10": ICD10, "I10C": ICD10, "I9C": ICD9CM, "CVX": CVX}
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]+")


def local(kind: str, namespace: str) -> str:
    """A system for a facility-local namespace, e.g. local("mrn", "BVDKNA") or local("visit", ...)."""
    return f"urn:hbgw:{kind}:{_UNSAFE.sub('-', namespace.lower()) or 'unknown'}"


def coding_system(hl7_system: str) -> str:
    """The FHIR system URI for an HL7 v2 coding-system name (table 0396), local ones kept distinct."""
    return HL7_CODING_SYSTEMS.get(hl7_system.upper(), local("code", hl7_system or "local"))
