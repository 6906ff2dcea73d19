"""Timings of the mappings: screen (ACK path, budget 0.3 ms), map_message, map_fhir, assemble, encoders."""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mappings.document import assemble
from mappings.hl7v2 import map_message, screen

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SCREEN_BUDGET_MS = 0.3


def per_call_ms(func: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and 99th percentile of one call, in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def hl7_corpus() -> dict[str, str]:
    messages = {}
    for path in sorted((CORPUS / "hl7v2").glob("*.hl7")):
        with open(path, encoding="utf-8", newline="") as handle:
            messages[path.name] = handle.read()
    return messages


def main() -> int:
    messages = hl7_corpus()
    rows: list[tuple[str, str, float, float]] = []
    for name, text in messages.items():
        rows.append(("screen", name, *per_call_ms(lambda t=text: screen(t), 2000)))
    for name, text in messages.items():
        rows.append(("map_message", name, *per_call_ms(lambda t=text: map_message(t), 30)))
    fragment = map_message(messages["adt_a01_admit.hl7"]).fragments[0]
    rows.append(("assemble", "adt_a01_admit.hl7", *per_call_ms(lambda: assemble(None, fragment), 200)))
    extra_rows(rows, messages)
    print(f"{'function':<14} {'input':<34} {'median ms':>10} {'p99 ms':>10}")
    for func, name, median, p99 in rows:
        print(f"{func:<14} {name:<34} {median:>10.4f} {p99:>10.4f}")
    screens = [r for r in rows if r[0] == "screen"]
    worst = max(r[2] for r in screens)
    print(json.dumps({"screen_worst_median_ms": round(worst, 4), "screen_budget_ms": SCREEN_BUDGET_MS,
                      "screen_within_budget": worst < SCREEN_BUDGET_MS,
                      "screen_msgs_per_s_one_core": round(1000 / statistics.mean(r[2] for r in screens))}))
    return 0 if worst < SCREEN_BUDGET_MS else 1


def extra_rows(rows: list[tuple[str, str, float, float]], messages: dict[str, str]) -> None:
    """Room for the FHIR and national-format timings once those modules exist."""


if __name__ == "__main__":
    sys.exit(main())
