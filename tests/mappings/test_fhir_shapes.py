"""The shape-remembering validation of our own resources refuses exactly what fhir.resources refuses."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings import fhir_shapes
from mappings.fhir_shapes import own_resource_issues
from mappings.fhir_validate import validation_issues
from mappings.hl7v2 import build_admin, map_message, mapper
from tests.mappings.conftest import corpus_text, hl7_files
from tests.mappings.test_fuzz import fuzzed_hl7

SAMPLES = Path(__file__).parent / "samples"
TRICKY: list[Any] = [None, "", " ", " x", "x ", "a  b", "a\tb", "x", "AMB", "urn:uuid:1", "not a uri",
                     "2026-02-30", "2026-03-12", "2026-03-12T08:00:00+07:00", "2026-03-12T08:00:00", "2026",
                     "http://example.org/x", "a" * 70, "ÂÊÔ", "1.5", "true", 0, -1, 1, 2**40, 1.5, float("nan"),
                     True, False, [], {}, ["x"], {"value": "x"}, {"unknown": 1}]


def _messages() -> list[str]:
    texts = [corpus_text(name) for name in hl7_files()]
    texts += [path.read_text(encoding="utf-8") for path in sorted(SAMPLES.glob("*/*.hl7"))]
    return texts


def _own_resources() -> list[dict[str, Any]]:
    return [resource for text in _messages() for fragment in map_message(text).fragments
            for resource in fragment.resources]


RESOURCES = _own_resources()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return out


def test_the_corpus_maps_to_resources_of_many_types() -> None:
    kinds = {resource["resourceType"] for resource in RESOURCES}
    assert {"Patient", "Organization", "Encounter", "Observation", "DiagnosticReport", "Condition",
            "MedicationRequest", "ChargeItem", "Immunization", "DocumentReference"} <= kinds


def test_every_own_resource_is_valid_and_its_shape_is_planned() -> None:
    """Once seen, a shape is checked without fhir.resources: the fast path is really taken."""
    for resource in RESOURCES:
        assert own_resource_issues([resource], "MSH") == []
        leaves: list[Any] = []
        plan = fhir_shapes._plans.get(fhir_shapes._shape(resource, leaves))
        assert plan is not None, resource["resourceType"]
        assert sum(len(indices) for _, indices in plan) == len(leaves)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_resource_is_judged_as_fhir_resources_judges_it(data: st.DataObject) -> None:
    """A value, a missing element or an element of another type: the same issues, cache cold or warm."""
    resource = data.draw(st.sampled_from(RESOURCES))
    own_resource_issues([resource], "MSH")  # its shape is known
    changed = resource
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [path for path in _paths(changed) if path != ("resourceType",)]
        if not paths:
            break
        changed = _replaced(changed, data.draw(st.sampled_from(paths)), data.draw(st.sampled_from(TRICKY)),
                            delete=data.draw(st.booleans()))
    expected = validation_issues([changed], "MSH")
    assert own_resource_issues([changed], "MSH") == expected
    assert own_resource_issues([changed], "MSH") == expected  # its shape now known too, if it passed


@pytest.mark.parametrize("seed", range(120))
def test_fuzzed_messages_map_alike_with_full_validation(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    message = fuzzed_hl7(seed)
    fast = map_message(message)
    monkeypatch.setattr(mapper, "own_resource_issues", validation_issues)
    assert map_message(message) == fast


def test_a_builder_bug_is_refused_though_its_shape_was_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapping bug that writes an invalid value in a known shape, or a misnamed element, is still refused."""
    admit = corpus_text("adt_a01_admit.hl7")
    assert map_message(admit).ok and map_message(admit).ok  # the Organization's shape is remembered
    organization = build_admin.organization

    def spaced_id(ctx: Any) -> dict[str, Any]:
        resource = organization(ctx)
        resource["id"] = f"{resource['id']} "  # an id has no blanks
        return resource

    monkeypatch.setattr(build_admin, "organization", spaced_id)
    refused = map_message(admit)
    assert not refused.ok and refused.fragments == ()
    assert [(i.location, i.code) for i in refused.issues if i.severity == "error"] == [
        ("MSH[1].id", "invalid")]

    def misnamed(ctx: Any) -> dict[str, Any]:
        resource = organization(ctx)
        resource["identifiers"] = resource.pop("identifier")
        return resource

    monkeypatch.setattr(build_admin, "organization", misnamed)
    assert [i.location for i in map_message(admit).issues if i.severity == "error"] == ["MSH[1].identifiers"]


def test_the_memory_of_shapes_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir_shapes, "MAX_SHAPES", 3)
    monkeypatch.setattr(fhir_shapes, "_plans", {})
    for resource in RESOURCES:
        own_resource_issues([resource], "MSH")
    assert len(fhir_shapes._plans) == 3
