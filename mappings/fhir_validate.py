"""Validation of FHIR R4B resources with fhir.resources, errors turned into located Issues."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from mappings.model import Issue


def element_path(base: str, loc: tuple[int | str, ...]) -> str:
    """A FHIR element path from a pydantic error location: Bundle.entry[1].resource.birthDate."""
    path = base
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def resource_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """Structural errors of one resource against its R4B model, located under `path`."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return [Issue(f"{path}.resourceType", "required", "resourceType is missing")]
    if not _known(kind):
        return [Issue(f"{path}.resourceType", "unsupported-resource", "resourceType is not an R4B resource type")]
    model = get_fhir_model_class(kind)
    nested = _nested_type_issues(resource, path)
    if nested:
        return nested
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [Issue(element_path(path, tuple(err["loc"])), "invalid", _message(err)) for err in exc.errors()]
    except (TypeError, KeyError, ValueError) as exc:
        return [Issue(path, "invalid", f"not a valid {kind[:40]} ({type(exc).__name__})")]
    return []


def _nested_type_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """Bundle entries whose resourceType fhir.resources cannot look up (it raises instead of reporting)."""
    entries = resource.get("entry") if resource.get("resourceType") == "Bundle" else None
    if not isinstance(entries, list):
        return []
    issues = []
    for index, entry in enumerate(entries):
        inner = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(inner, dict):
            continue
        kind = inner.get("resourceType")
        if not isinstance(kind, str) or not _known(kind):
            issues.append(Issue(f"{path}.entry[{index}].resource.resourceType", "invalid",
                                "resourceType must name an R4B resource"))
    return issues


def _known(kind: str) -> bool:
    try:
        get_fhir_model_class(kind)
    except (AttributeError, KeyError, ValueError):
        return False
    return True


def _message(err: Any) -> str:
    """The pydantic message without the offending input value (it may be personal data)."""
    text = str(err.get("msg", "invalid value"))
    return text.split(" [", 1)[0][:200]


def validation_issues(resources: list[dict[str, Any]], path: str) -> list[Issue]:
    """Every structural error of a list of resources (a mapping bug when they came from HL7 v2)."""
    issues: list[Issue] = []
    for index, resource in enumerate(resources):
        issues += resource_issues(resource, f"{path}[{index}]")
    return issues
