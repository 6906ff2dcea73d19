"""Validation of the resources the HL7 v2 mapping builds: as strict as fhir.resources, at a fraction of its cost.

Why: a full fhir.resources `model_validate` of every resource the mapper built was more than half of the CPU
of mapping an HL7 v2 message, and those resources come in few shapes (our builders write them).

What decides whether a resource is valid R4B JSON for fhir.resources is (1) its shape: which elements it
has, their nesting and cardinality, the JSON type of each value, the choice-of-type and required elements,
unknown elements; and (2) each primitive value against the validator of its element's FHIR type (code, id,
uri, dateTime, positiveInt, ...). No validator in fhir.resources R4B looks at two values together.

So a resource's shape is its JSON tree with every primitive value replaced by its Python type (the values of
`resourceType` are kept, since they choose the model). The first time a shape is met, the resource is
validated in full; when it passes, the shape is remembered with the pydantic validator fhir.resources applies
to each of its primitives (taken from the model's own field annotations). A later resource of that shape
passes when its primitive values pass those validators: one call per FHIR type, in pydantic-core. Anything
else (an unknown shape, a shape that failed, a value that fails, an element whose type cannot be planned:
contained resources, primitive extensions `_x`) is validated in full, so what is refused, and the issues
reported, are exactly those of the full validation. The memory of shapes is bounded (MAX_SHAPES, oldest
forgotten first) and belongs to the process.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter

from mappings.fhir_validate import resource_issues
from mappings.model import Issue

MAX_SHAPES = 2048
LIST = "[]"  # first item of a list's shape; a dict's shape is a tuple of (key, shape) pairs
PRIMITIVES = (str, int, float, bool, type(None))
UNIONS = (typing.Union, types.UnionType)

Shape = object  # nested tuples of keys and types: hashable, compared by value
Plan = tuple[tuple[TypeAdapter[Any], tuple[int, ...]], ...]  # per FHIR type: its validator and the leaves it checks

_plans: dict[Shape, Plan | None] = {}  # None: the shape passed, but cannot be planned: validate in full
_adapters: dict[Any, TypeAdapter[Any]] = {}
_fields: dict[type, dict[str, Any]] = {}


def own_resource_issues(resources: list[dict[str, Any]], path: str) -> list[Issue]:
    """Every structural error of resources built by our mappings, as fhir.resources reports it, cheaply."""
    issues: list[Issue] = []
    for index, resource in enumerate(resources):
        if not _passes_known_shape(resource):
            issues += _validate_in_full(resource, f"{path}[{index}]")
    return issues


def _passes_known_shape(resource: dict[str, Any]) -> bool:
    leaves: list[Any] = []
    plan = _plans.get(_shape(resource, leaves))
    if plan is None:
        return False
    try:
        for adapter, indices in plan:
            adapter.validate_python([leaves[i] for i in indices])
    except Exception:  # noqa: BLE001 - any failure: the full validation says what is wrong
        return False
    return True


def _validate_in_full(resource: dict[str, Any], path: str) -> list[Issue]:
    issues = resource_issues(resource, path)
    if not issues:
        leaves: list[Any] = []
        shape = _shape(resource, leaves)
        if shape not in _plans:
            if len(_plans) >= MAX_SHAPES:
                del _plans[next(iter(_plans))]
            _plans[shape] = _plan(resource)
    return issues


def _shape(value: Any, leaves: list[Any]) -> Shape:
    """The value with each primitive replaced by its type, appending the primitives to `leaves` in order."""
    kind = type(value)
    if kind is dict:
        pairs: list[tuple[Any, Shape]] = []
        for key, item in value.items():
            kind = type(item)
            if kind is dict or kind is list:
                pairs.append((key, _shape(item, leaves)))
            elif key == "resourceType" and kind is str:
                pairs.append((key, ("=", item)))
            else:
                leaves.append(item)
                pairs.append((key, kind))
        return tuple(pairs)
    if kind is list:
        return (LIST, *[_shape(item, leaves) for item in value])
    leaves.append(value)
    return kind


def _plan(resource: dict[str, Any]) -> Plan | None:
    """Which fhir.resources validator checks each primitive of a resource that passed; None if not known."""
    annotations: list[Any] = []
    try:
        if not _collect(resource, get_fhir_model_class(resource["resourceType"]), annotations):
            return None
        groups: dict[Any, list[int]] = {}
        for index, annotation in enumerate(annotations):
            groups.setdefault(annotation, []).append(index)
        return tuple((_adapter(annotation), tuple(indices)) for annotation, indices in groups.items())
    except Exception:  # noqa: BLE001 - an annotation pydantic or hashing cannot take: validate in full
        return None


def _collect(element: dict[str, Any], model: type, out: list[Any]) -> bool:
    """Append the annotation of each primitive of `element` (an instance of `model`) in _shape's order."""
    fields = _fields_of(model)
    for key, value in element.items():
        if key == "resourceType" and type(value) is str:
            continue
        annotation = fields.get(key)
        if annotation is None or not _collect_value(value, annotation, out):
            return False
    return True


def _collect_value(value: Any, annotation: Any, out: list[Any]) -> bool:
    if type(value) is dict:
        model = _complex(annotation)
        return model is not None and _collect(value, model, out)
    if type(value) is list:
        item = _list_item(annotation)
        return item is not None and all(_collect_value(entry, item, out) for entry in value)
    if type(value) not in PRIMITIVES:
        return False
    out.append(annotation)
    return True


def _fields_of(model: type) -> dict[str, Any]:
    """A model's fields by JSON name and by Python name (fhir.resources accepts both), with their annotations."""
    known = _fields.get(model)
    if known is None:
        known = {}
        for name, info in getattr(model, "model_fields", {}).items():
            known[name] = info.annotation
            known[info.alias or name] = info.annotation
        _fields[model] = known
    return known


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union without None; the annotation itself otherwise."""
    if typing.get_origin(annotation) in UNIONS:
        return tuple(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return (annotation,)


def _complex(annotation: Any) -> type | None:
    """The model of a complex element; None for a resource of any type (contained) or a primitive's extension."""
    members = _members(annotation)
    if len(members) != 1 or not isinstance(members[0], type) or not issubclass(members[0], FhirBase) \
            or issubclass(members[0], FhirElementOrResourceBase):
        return None
    model: type = members[0].get_model_klass()
    return None if model.__name__ == "FHIRPrimitiveExtension" else model


def _list_item(annotation: Any) -> Any:
    members = _members(annotation)
    if len(members) != 1 or typing.get_origin(members[0]) is not list:
        return None
    return typing.get_args(members[0])[0]


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(annotation)
    if adapter is None:
        adapter = _adapters[annotation] = TypeAdapter(list[annotation])
    return adapter
