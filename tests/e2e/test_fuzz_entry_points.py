"""Property-based fuzzing of the MLLP and FHIR entry points over real sockets, bounded for `make test`.

`make fuzz` (bench/fuzz.py) runs the same properties for as long as asked and reports crash sites.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzzing import (
    EntryPoints,
    check_fhir,
    check_mllp,
    corpus_patient_create,
    fhir_requests,
    hl7_payloads,
)

BOUNDED = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EntryPoints]:
    with EntryPoints(Path(tmp_path_factory.mktemp("fuzz"))).running() as running:
        yield running


@BOUNDED
@given(st.lists(hl7_payloads(), min_size=1, max_size=3))
@example([b"BHS"])  # found by `make fuzz`: an empty batch is answered by an empty acknowledgement batch
def test_every_complete_frame_gets_an_ack_on_a_connection_that_stays_open(points: EntryPoints,
                                                                          payloads: list[bytes]) -> None:
    check_mllp(points, payloads)


@BOUNDED
@given(fhir_requests())
@example(corpus_patient_create("identifier=\u00e9"))  # found by `make fuzz`: sent as latin-1, not UTF-8: was a 500
def test_every_fhir_request_gets_a_fhir_answer_never_a_500(points: EntryPoints,
                                                           request: tuple[str, dict[str, str], bytes]) -> None:
    check_fhir(points, request)


def test_no_handler_crashed_and_no_log_line_carries_raw_bytes(points: EntryPoints) -> None:
    """Runs after the two properties above (same module-scoped servers)."""
    assert points.logs, "the fuzz tests above ran first and logged"
    assert points.crash_sites() == {}
    assert points.log_problems() == []
