"""Timings of the mappings: screen (ACK path, budget 0.3 ms), map_message, map_fhir, assemble, encoders; and the
CPU per message of mapping through a worker process, in the worker and in the gateway process around it."""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from gateway.mapping_workers import MappingWorkers, mapping_executor
from gateway.store import ClaimedMessage
from mappings.checkup.build import FormOptions, build_form
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message, screen
from mappings.model import FacilityInfo
from mappings.xml130 import build_envelope, build_tables

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SCREEN_BUDGET_MS = 0.3
FACILITY = FacilityInfo("Bench facility", "40001", "4000000000123")
WORKER_BATCH = 32  # the mapping stage's batch (gateway/mapping_stage.MAPPING_BATCH)
WORKER_INPUTS = (("mllp", "hl7v2/adt_a01_admit.hl7"), ("mllp", "hl7v2/oru_r01_lab.hl7"),
                 ("mllp", "hl7v2/oru_r01_health_check.hl7"), ("fhir", "fhir/transaction_outpatient_visit.json"))
EPISODE = ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a08_update.hl7", "adt_a03_discharge.hl7",
           "mdm_t02_summary.hl7")


def per_call_ms(func: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Median and 99th percentile wall time of one call, and CPU time per call, in milliseconds.

    The CPU figure (process time over the whole run) is the one to compare between machines: on a
    busy host the wall-clock tail mostly measures the scheduler.
    """
    samples = []
    cpu_start = time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    cpu = (time.process_time() - cpu_start) * 1000 / repeat
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], cpu


def hl7_corpus() -> dict[str, str]:
    messages = {}
    for path in sorted((CORPUS / "hl7v2").glob("*.hl7")):
        with open(path, encoding="utf-8", newline="") as handle:
            messages[path.name] = handle.read()
    return messages


def main() -> int:
    messages = hl7_corpus()
    rows: list[tuple[str, str, float, float, float]] = []
    for name, text in messages.items():
        rows.append(("screen", name, *per_call_ms(partial(screen, text), 2000)))
    for name, text in messages.items():
        rows.append(("map_message", name, *per_call_ms(partial(map_message, text), 30)))
    fragment = map_message(messages["adt_a01_admit.hl7"]).fragments[0]
    rows.append(("assemble", "adt_a01_admit.hl7", *per_call_ms(lambda: assemble(None, fragment), 200)))
    extra_rows(rows, messages)
    print(f"{'function':<14} {'input':<34} {'median ms':>10} {'p99 ms':>10} {'cpu ms':>10}")
    for func, name, median, p99, cpu in rows:
        print(f"{func:<14} {name:<34} {median:>10.4f} {p99:>10.4f} {cpu:>10.4f}")
    screens = [r for r in rows if r[0] == "screen"]
    worst = max(r[4] for r in screens)
    print(json.dumps({"screen_worst_cpu_ms": round(worst, 4), "screen_budget_ms": SCREEN_BUDGET_MS,
                      "screen_within_budget": worst < SCREEN_BUDGET_MS,
                      "screen_msgs_per_s_one_core": round(1000 / statistics.mean(r[4] for r in screens))}))
    for source, name in WORKER_INPUTS:
        worker, gateway = asyncio.run(through_worker(source, (CORPUS / name).read_bytes(), 10))
        print(json.dumps({"through_one_worker": name.split("/")[-1], "batch": WORKER_BATCH,
                          "worker_cpu_ms_per_message": round(worker, 3),
                          "gateway_cpu_ms_per_message": round(gateway, 3)}))
    return 0 if worst < SCREEN_BUDGET_MS else 1


async def through_worker(source: str, payload: bytes, batches: int) -> tuple[float, float]:
    """CPU per message, in one mapping worker process and in this process, as the mapping stage sends them."""
    pool = mapping_executor(1)
    workers = MappingWorkers(lambda: pool, 1)
    loop = asyncio.get_running_loop()
    messages = [ClaimedMessage(n, source, "", "", 0.0, payload) for n in range(1, WORKER_BATCH + 1)]
    try:
        await workers.map_all(messages)  # the worker started, its shapes known
        worker_start = await loop.run_in_executor(pool, time.process_time)
        start = time.process_time()
        for _ in range(batches):
            await workers.map_all(messages)
        gateway = time.process_time() - start
        worker = await loop.run_in_executor(pool, time.process_time) - worker_start
    finally:
        workers.stop()
    return worker * 1000 / (batches * WORKER_BATCH), gateway * 1000 / (batches * WORKER_BATCH)


def extra_rows(rows: list[tuple[str, str, float, float, float]], messages: dict[str, str]) -> None:
    """FHIR input and the national encodings, on the corpus episode and health check."""
    with open(CORPUS / "fhir" / "transaction_outpatient_visit.json", encoding="utf-8") as handle:
        bundle = json.load(handle)
    rows.append(("map_fhir", "transaction_outpatient_visit.json", *per_call_ms(lambda: map_fhir(bundle), 30)))
    doc = None
    for name in EPISODE:
        doc = assemble(doc, map_message(messages[name]).fragments[0])
    assert doc is not None
    episode = doc
    tables = build_tables(episode, FACILITY)
    rows.append(("build_tables", "episode (5 messages)", *per_call_ms(lambda: build_tables(episode, FACILITY), 200)))
    rows.append(("build_envelope", "episode (5 messages)",
                 *per_call_ms(lambda: build_envelope(tables, FACILITY, datetime.now(UTC)), 200)))
    check = assemble(None, map_message(messages["oru_r01_health_check.hl7"]).fragments[0])
    rows.append(("build_form", "oru_r01_health_check.hl7",
                 *per_call_ms(lambda: build_form(check, FACILITY, FormOptions("14", "9")), 200)))


if __name__ == "__main__":
    sys.exit(main())
