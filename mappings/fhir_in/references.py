"""References inside an inbound Bundle: every one must name an entry of the Bundle, and a Medication entry is
folded into the MedicationStatement that references it.

The gateway relays records and keeps no FHIR resources of its own to resolve a reference against, so a
reference to anything outside the Bundle (a transaction entry that was left out, a server id) can never be
resolved: it is refused, named, rather than dropped from the record. References inside a resource (`#id`,
contained resources) and logical references (an identifier without a reference) need no entry; neither
does a conditional reference by identifier (`Practitioner?identifier=system|value`, as Synthea writes for
practitioners and organizations loaded apart), which a server resolves by search: the gateway turns it into
the logical reference it stands for (Reference.identifier), which the health book can carry as it is.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from mappings.model import Issue

_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?identifier=([^&]+)")
_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def entry_keys(full_url: str, resource: dict[str, Any]) -> set[str]:
    """Every reference string that names this entry: its fullUrl, `Type/id`, and the `Type/id` a RESTful
    fullUrl ends with."""
    keys = {full_url} if full_url else set()
    if resource.get("id"):
        keys.add(f"{resource['resourceType']}/{resource['id']}")
    tail = _TAIL.search(full_url) if full_url else None
    if tail:
        keys.add(tail.group(1))
    return keys


def _references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path of the reference element, reference string) for every Reference in a resource."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield f"{path}.reference", reference
        for key, item in value.items():
            if key != "reference" and isinstance(item, dict | list):
                yield from _references(item, f"{path}.{key}")


def _logical(reference: str) -> dict[str, Any] | None:
    """The logical reference a conditional reference by one identifier stands for, else None."""
    match = _CONDITIONAL.fullmatch(reference)
    if match is None:
        return None
    system, bar, value = unquote(match.group(2)).rpartition("|")
    identifier = {"system": system, "value": value} if bar and system else {"value": value}
    return {"type": match.group(1), "identifier": identifier} if value else None


def with_logical_references(value: Any) -> Any:
    """A copy in which each conditional reference by identifier is the logical reference it stands for."""
    if isinstance(value, list):
        return [with_logical_references(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: with_logical_references(item) for key, item in value.items()}
    logical = _logical(out["reference"]) if isinstance(out.get("reference"), str) else None
    if logical is not None:
        del out["reference"]
        out.update(logical)
    return out


def unresolved(entries: list[tuple[int, str, dict[str, Any]]]) -> list[Issue]:
    """Issues for each reference that names no entry; `entries` are (index, fullUrl, resource)."""
    known: set[str] = set()
    for _, full_url, resource in entries:
        known |= entry_keys(full_url, resource)
    issues = []
    for index, _, resource in entries:
        for path, reference in _references(resource, f"Bundle.entry[{index}].resource"):
            if reference.startswith("#") or reference in known or _logical(reference) is not None:
                continue
            target = reference if reference.startswith(("urn:uuid:", "urn:oid:")) else reference.split("?")[0][:80]
            issues.append(Issue(path, "unresolved-reference",
                                f"reference {target!r} names no entry of this Bundle; the gateway keeps no "
                                "resources of its own to resolve it against: send the resource in the Bundle"))
    return issues


def fold_medications(entries: list[tuple[int, str, dict[str, Any]]]) -> tuple[list[tuple[int, str, dict[str, Any]]],
                                                                           list[Issue]]:
    """The entries with each Medication folded into the MedicationStatements that reference it (as their
    medicationCodeableConcept, which the national formats read) and dropped; issues for a Medication that
    has no code to fold."""
    medications: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, full_url, resource in entries:
        if resource["resourceType"] == "Medication":
            for key in entry_keys(full_url, resource):
                medications[key] = (index, resource)
    if not medications:
        return entries, []
    issues: list[Issue] = []
    out = []
    for index, full_url, resource in entries:
        if resource["resourceType"] == "Medication":
            continue
        reference = (resource.get("medicationReference") or {}).get("reference") \
            if resource["resourceType"] == "MedicationStatement" else None
        if isinstance(reference, str) and reference in medications:
            medication_index, medication = medications[reference]
            code = medication.get("code")
            if not isinstance(code, dict) or not (code.get("coding") or code.get("text")):
                issues.append(Issue(f"Bundle.entry[{medication_index}].resource.code", "required",
                                    "a Medication that a MedicationStatement references needs a code or text"))
                continue
            resource = {key: value for key, value in resource.items() if key != "medicationReference"}
            resource["medicationCodeableConcept"] = code
        out.append((index, full_url, resource))
    return out, issues
