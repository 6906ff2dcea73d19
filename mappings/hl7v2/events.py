"""The message types the gateway accepts, as data: document kind, episode need, encounter effect."""
from __future__ import annotations

from dataclasses import dataclass

from mappings.model import DocumentKind
from mappings.vn import codes

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
FALLBACK_VERSION = "2.5"


@dataclass(frozen=True, slots=True)
class EventRule:
    """What one message type does to a health-book document.

    `encounter_status` None means: derive it from PV1 (finished when PV1-45 discharge time is set).
    `cancels_discharge` drops the discharge time and disposition (A13).
    Which feed owns the Patient and Encounter (ADT) is decided in mappings.document.
    """

    kind: DocumentKind
    needs_visit: bool
    encounter_status: str | None = None
    cancels_discharge: bool = False


EVENTS: dict[str, EventRule] = {
    "ADT^A01": EventRule("episode", True, "in-progress"),
    "ADT^A02": EventRule("episode", True, "in-progress"),
    "ADT^A03": EventRule("episode", True, "finished"),
    "ADT^A04": EventRule("episode", True, "in-progress"),
    "ADT^A05": EventRule("episode", True, "planned"),
    "ADT^A08": EventRule("episode", True),
    "ADT^A11": EventRule("episode", True, "cancelled"),
    "ADT^A13": EventRule("episode", True, "in-progress", cancels_discharge=True),
    "ADT^A28": EventRule("episode", False),
    "ADT^A31": EventRule("episode", False),
    "ADT^A40": EventRule("episode", False),
    "ORU^R01": EventRule("episode", True),
    "MDM^T02": EventRule("episode", True),
    "VXU^V04": EventRule("immunization", False),
    # claim content (XML 130 XML2/XML3): charges, pharmacy orders, dispenses and administrations
    "DFT^P03": EventRule("episode", True),
    "RDE^O11": EventRule("episode", True),
    "RDS^O13": EventRule("episode", True),
    "RAS^O17": EventRule("episode", True),
}
MESSAGE_TYPES = frozenset(EVENTS)  # the one list of accepted message types: screen, mapping, metric labels


def event_key(msh9_type: str, msh9_event: str) -> str:
    """The EVENTS key for MSH-9 components 1 and 2."""
    return f"{msh9_type.strip().upper()}^{msh9_event.strip().upper()}"

HEALTH_CHECK_ORDER_PREFIX = "KSK"
HEALTH_CLASS_CODE = codes.HEALTH_CLASS_CODE
HEALTH_CHECK_CONCLUSION_CODE = codes.HEALTH_CHECK_CONCLUSION_CODE
VITAL_SIGN_LOINC = frozenset({"8867-4", "8480-6", "8462-4", "8310-5", "29463-7", "8302-2", "39156-5", "9279-1",
                              "59408-5", "85354-9"})
