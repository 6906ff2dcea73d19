"""Seeded fuzzing of the whole mapping chain: nothing raises, and screen agrees with map_message."""
from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mappings.checkup.build import FormOptions, build_form
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message, screen
from mappings.hl7v2.rules import DATE_FIELDS, REPEATING_SEGMENTS
from mappings.model import FacilityInfo, MappingResult
from mappings.xml130 import build_envelope, build_tables
from tests.mappings.conftest import CORPUS, corpus_text, hl7_files, replace_field

FACILITY = FacilityInfo("Fuzz facility", "40001", "4000000000123")
NAMES = ("NGUYỄN", "VĂN AN", "LÊ", "THỊ HOA", "TRẦN", "GIA BẢO", "PHAN", "HỒ", "Võ", "Mai")
DIGIT_RUN = re.compile(r"[0-9]{6,}")
HL7_NOISE = "|^~\\&\r\n0123456789AZ .-٣²\x00"
JUNK: list[Any] = [None, "", 0, -1, 3.5, True, [], {}, "x", [1], {"a": 1}, "2026-13-45", "urn:uuid:x"]


def assert_no_personal_values(result: MappingResult) -> None:
    """Issue messages name fields, never values: no identifier-like digit runs, no patient names."""
    for issue in result.issues:
        assert not DIGIT_RUN.search(issue.message) and not any(name in issue.message for name in NAMES)


def encode_all(result: MappingResult) -> None:
    """Run every fragment through assemble and the national encoders that take its kind."""
    for fragment in result.fragments:
        document = assemble(None, fragment)
        if document.kind == "episode" and (tables := build_tables(document, FACILITY)):
            build_envelope(tables, FACILITY, datetime(2026, 1, 1, tzinfo=UTC))
        elif document.kind == "health_check":
            form = build_form(document, FACILITY, FormOptions("14", "9"))
            assert not [i for i in form.issues if i.code == "required"], form.issues  # screen refuses those


def fuzzed_hl7(seed: int) -> str:
    rng = random.Random(seed)
    names = hl7_files()
    text = list(corpus_text(names[seed % len(names)]))
    for _ in range(rng.randint(1, 8)):
        text[rng.randrange(len(text))] = rng.choice(HL7_NOISE)
    return "".join(text)


@pytest.mark.parametrize("seed", range(250))
def test_hl7_screen_agrees_with_map_and_nothing_raises(seed: int) -> None:
    message = fuzzed_hl7(seed)
    result = map_message(message)
    screened = [(i.location, i.code) for i in screen(message) if i.severity == "error"]
    mapped = [(i.location, i.code) for i in result.issues if i.severity == "error"]
    assert mapped == screened, "what screen accepts (AA) must map, and for the same reasons when not"
    assert result.fragments == () or result.ok
    assert_no_personal_values(result)
    encode_all(result)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*prefix, key))


def fuzzed_bundle(seed: int) -> dict[str, Any]:
    with open(CORPUS / "fhir" / "transaction_outpatient_visit.json", encoding="utf-8") as handle:
        bundle: dict[str, Any] = json.load(handle)
    rng = random.Random(seed)
    paths = [p for p in _paths(bundle) if p]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent: Any = bundle
        try:
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.4:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        except (KeyError, IndexError, TypeError):
            continue
    return bundle


@pytest.mark.parametrize("seed", range(400))
def test_fhir_nothing_raises(seed: int) -> None:
    result = map_fhir(fuzzed_bundle(seed))
    assert result.fragments == () or result.ok
    assert all(i.location.startswith(("Bundle", "resourceType")) for i in result.issues)
    assert_no_personal_values(result)
    encode_all(result)


REPEATING = REPEATING_SEGMENTS
IMPOSSIBLE_TIMES = ("20261399250000", "20260230", "20260312240000", "20260312082560", "20260312082500+1430",
                    "20260312082500+0760", "2026-03-12", "00000101")


@pytest.mark.parametrize("name", [n for n in hl7_files() if not n.startswith("invalid_")])
def test_every_date_field_is_judged_alike_by_screen_and_map(name: str) -> None:
    """An impossible time in any field the mapping reads is refused by screen, at that field, never later."""
    message = corpus_text(name)
    present = {line[:3] for line in message.split("\r")}
    for segment, numbers in DATE_FIELDS.items():
        for number in numbers if segment in present else ():
            for value in IMPOSSIBLE_TIMES:
                changed = replace_field(message, segment, number, value)
                screened = [(i.location, i.code) for i in screen(changed) if i.severity == "error"]
                location = f"{segment}[1]-{number}" if segment in REPEATING else f"{segment}-{number}"
                assert screened == [(location, "invalid-date")], (segment, number, value)
                assert [(i.location, i.code) for i in map_message(changed).issues if i.severity == "error"] == screened


RESULT_VALUES = ("88", "<5.2", ">= 100", ".5", "88.", "^88", "<^88", "=^88", "^", "2^-^5", "abc", "9" * 16, "-1",
                 "1200", "٨٨", "\\F\\", "88~89", "&", "<>^5")


@pytest.mark.parametrize("kind", ["NM", "SN", "ST", "CWE", ""])
def test_result_values_are_judged_alike_by_screen_and_map(kind: str) -> None:
    """Whatever OBX-5 holds, screen and map_message agree, and an accepted value maps and encodes."""
    admit = corpus_text("adt_a01_admit.hl7")
    for value in RESULT_VALUES:
        message = replace_field(replace_field(admit, "OBX", 2, kind), "OBX", 5, value)
        result = map_message(message)
        screened = [(i.location, i.code) for i in screen(message) if i.severity == "error"]
        assert [(i.location, i.code) for i in result.issues if i.severity == "error"] == screened, value
        assert bool(result.fragments) == (not screened), value
        encode_all(result)
