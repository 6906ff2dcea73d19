"""The facilities behind this gateway, and which one a message or a document belongs to.

One facility is the simple case ([facility] in the settings): every document is its own. With several
([[facilities]]), each is named by its MoH id and its `senders` (MSH-4.1 or MSH-4.2, the MoH id of a FHIR
Encounter.serviceProvider, the namespace of its FHIR visit identifiers); the document says which facility
treated the patient (its Organization, its Encounter's serviceProvider, the facility part of its MA_LK),
so the codes in what is signed always come from that facility, never from a default. A message naming no
known facility is refused at the listener, with the field named.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from adapters.portal.bhxh import BhxhAccount
from gateway.config import FacilitySettings, Settings
from gateway.signing import Signer
from mappings.model import Document, FacilityInfo, Issue
from mappings.vn import systems

MOH_FACILITY = systems.MOH_FACILITY


class UnknownFacility(ValueError):
    """A document or message that names none of the configured facilities."""


@dataclass(frozen=True, slots=True)
class Facility:
    """One facility as the gateway serves it: its codes, its signer and its BHXH account."""

    info: FacilityInfo
    signer: Signer
    account: BhxhAccount
    keys: frozenset[str]


def facility_info(settings: FacilitySettings) -> FacilityInfo:
    """The facility codes the mappings put in what is signed."""
    return FacilityInfo(name=settings.name, bhxh_code=settings.bhxh_code, moh_facility_id=settings.moh_facility_id,
                        tax_code=settings.tax_code, head_code=settings.head_code)


def document_keys(document: Document) -> list[str]:
    """What names the treating facility in a document: Organization and serviceProvider ids, the MA_LK prefix."""
    keys: list[str] = []
    for entry in document.bundle.get("entry", []):
        resource: dict[str, Any] = entry.get("resource") or {}
        if resource.get("resourceType") == "Organization":
            keys += [str(i.get("value", "")) for i in resource.get("identifier", []) if i.get("system") == MOH_FACILITY]
        if resource.get("resourceType") == "Encounter":
            provider = (resource.get("serviceProvider") or {}).get("identifier") or {}
            if provider.get("system") == MOH_FACILITY:
                keys.append(str(provider.get("value", "")))
    keys.append(document.document_id.split("_", 1)[0])
    return [key for key in keys if key]


class Facilities:
    """Every facility of this gateway, found by what names it."""

    def __init__(self, settings: Settings, load_signer: Callable[[Any], Signer]) -> None:
        bhxh = settings.portal.bhxh
        self.several = bool(settings.facilities)
        entries: Iterable[FacilitySettings] = settings.facilities or [settings.facility]
        default_signer = load_signer(settings.signing)
        self.all: list[Facility] = []
        for entry in entries:
            senders = list(getattr(entry, "senders", []))
            signing = getattr(entry, "signing", None)
            password = getattr(entry, "portal_password", None) or bhxh.password
            account = BhxhAccount(entry.bhxh_code, getattr(entry, "portal_username", "") or bhxh.username,
                                  password.get_secret_value(), entry.province_code)
            signer = load_signer(signing) if signing is not None else default_signer
            self.all.append(Facility(facility_info(entry), signer, account,
                                     frozenset({entry.moh_facility_id, entry.bhxh_code, *senders})))

    @property
    def signers(self) -> list[Signer]:
        """Each distinct signer once, to report expiry and close token sessions."""
        return list({id(facility.signer): facility.signer for facility in self.all}.values())

    def named(self, keys: Iterable[str]) -> Facility | None:
        """The facility one of these keys names; the only one when there is just one."""
        if not self.several:
            return self.all[0]
        wanted = set(keys)
        return next((facility for facility in self.all if facility.keys & wanted), None)

    def of_document(self, document: Document) -> Facility:
        """The facility that treated the patient of this document; UnknownFacility if it names none."""
        found = self.named(document_keys(document))
        if found is None:
            raise UnknownFacility(f"document {document.idempotency_key} names no configured facility")
        return found

    def hl7_refusals(self, sending_facility: str, component: str) -> list[Issue]:
        """Why an HL7 message's MSH-4 cannot be served here: none when it names a configured facility."""
        if self.named(part for part in sending_facility.split(component)[:2] if part) is not None:
            return []
        return [Issue("MSH-4", "unknown-facility",
                      "MSH-4 names none of the facilities this gateway serves (facilities.senders)")]

    def fhir_refusals(self, keys: list[str]) -> list[Issue]:
        """Why a FHIR episode cannot be served here: none when it names a configured facility."""
        if not keys or self.named(keys) is not None:
            return []
        return [Issue("Encounter.serviceProvider", "unknown-facility",
                      "the visit names none of the facilities this gateway serves (facilities.senders)")]
