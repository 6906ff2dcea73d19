"""`make fuzz`: fuzz the MLLP and FHIR entry points over real sockets for as long as asked, then report.

    python bench/fuzz.py --seconds 600

Runs the properties of tests/e2e/test_fuzz_entry_points.py in rounds of fresh random examples until the time
is up, and prints each crash site (where a handler raised instead of answering, from the gateway's own log)
and each broken invariant (where the check failed, with the shrunk input's size) with how often it was seen.
Exit status 1 when anything was found.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzzing import (
    EntryPoints,
    check_fhir,
    check_mllp,
    failure_site,
    fhir_requests,
    hl7_payloads,
)

EXAMPLE_CHARS = 600
ROUND = settings(max_examples=200, deadline=None, database=None, print_blob=False,
                 suppress_health_check=list(HealthCheck))


def fuzz_round(points: EntryPoints, which: str, round_seed: int) -> None:
    """One round of fresh examples against one entry point; raises what hypothesis found (shrunk)."""
    if which == "mllp":
        @seed(round_seed)
        @ROUND
        @given(hl7_payloads())
        def mllp(payload: bytes) -> None:
            check_mllp(points, [payload])
        mllp()
    else:
        @seed(round_seed)
        @ROUND
        @given(fhir_requests())
        def fhir(request: tuple[str, dict[str, str], bytes]) -> None:
            check_fhir(points, request)
        fhir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz (default 300)")
    args = parser.parse_args()
    broken: Counter[str] = Counter()
    examples: dict[str, str] = {}  # the first shrunk input seen at each broken invariant
    rounds = Counter[str]()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory, EntryPoints(Path(directory)).running() as points:
        while time.monotonic() - started < args.seconds:
            for which in ("mllp", "fhir"):
                rounds[which] += 1
                try:
                    fuzz_round(points, which, random.getrandbits(32))
                except Exception as exc:  # noqa: BLE001 (every failure is a finding to report)
                    site = f"{which}: {failure_site(exc)}"
                    broken[site] += 1
                    examples.setdefault(site, " ".join(getattr(exc, "__notes__", []))[:EXAMPLE_CHARS])
        crashes = points.crash_sites()
        leaks = Counter(points.log_problems())
    elapsed = time.monotonic() - started
    print(f"fuzzed {elapsed:.0f} s: {rounds['mllp']} MLLP and {rounds['fhir']} FHIR rounds of up to"
          f" {ROUND.max_examples} inputs")
    for title, found in (("crash sites (handler raised)", crashes), ("broken invariants", broken),
                         ("log events with raw control bytes", leaks)):
        print(f"{title}: {'none' if not found else ''}")
        for where, count in found.most_common():
            print(f"  {count:6d}  {where}")
            if where in examples:
                print(f"          {examples[where]}")
    return 1 if crashes or broken or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
