"""The store alone: does an acknowledgement wait on anything but its own commit, and what does a scrape cost?

Three figures, each beside the disk's own limit:
- one durable SQLite commit (WAL, synchronous=FULL, one small row) on this disk: the floor for any ACK;
- ACK commit latency (store_inbound, 16 concurrent senders) while the submission stage claims as fast as it
  can, with `--backlog` pending documents of `--patients` patients and the portal down (every patient's
  head of line waits for a retry), beside the same load with nothing pending;
- a `/metrics` scrape's store reads (queue depths and the oldest pending age) on an empty store and on
  the filled one, so a scrape's cost can be compared across store sizes.

    .venv/bin/python bench/bench_store.py [--backlog 10000] [--patients 5] [--seconds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mllp import durable_commit_ms

from adapters.portal.base import Submission
from gateway.encryption import PayloadCipher
from gateway.store import EncodedDocument, Inbound, MappingOutcome, SqliteStore
from mappings.model import Document

CONNECTIONS = 16
FILL_BATCH = 500


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values lie."""
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


async def fill(store: SqliteStore, backlog: int, patients: int) -> None:
    """`backlog` mapped messages, each with one pending submission, spread over `patients` patients."""
    for start in range(0, backlog, FILL_BATCH):
        outcomes = []
        for number in range(start, min(start + FILL_BATCH, backlog)):
            stored = await store.store_inbound(Inbound("mllp", "HIS|BV", f"F{number}", "ADT^A01", "c",
                                                       b"MSH|" + os.urandom(600), b"AA"))
            document = EncodedDocument.of(Document(f"D{number}", 1, "episode", f"P{number % patients}",
                                                    {"resourceType": "Bundle"}))
            outcomes.append(MappingOutcome(stored.message_id, [document], [Submission(
                "bhxh_xml130", f"D{number}:v1", f"D{number}", 1, os.urandom(3000), "application/xml")]))
        await store.finish_messages(outcomes)


async def portal_down(store: SqliteStore) -> None:
    """Every patient's head of line is claimed once and fails: it waits a minute for its retry."""
    for item in await store.claim_submissions(10_000):
        await store.schedule_retry(item.id, 60.0, "portal down")


async def ack_latencies(store: SqliteStore, seconds: float, claiming: bool) -> tuple[list[float], int]:
    """store_inbound latencies from 16 senders for `seconds`, with the claim loop beside them or not."""
    latencies: list[float] = []
    claims = 0
    until = time.perf_counter() + seconds

    async def sender(number: int) -> None:
        sequence = 0
        while time.perf_counter() < until:
            sequence += 1
            started = time.perf_counter()
            await store.store_inbound(Inbound("mllp", "HIS|BV", f"A{claiming}{number}N{sequence}", "ADT^A01", "c",
                                              b"MSH|" + os.urandom(1200), b"AA"))
            latencies.append(time.perf_counter() - started)

    async def claimer() -> None:
        nonlocal claims
        while time.perf_counter() < until:
            await store.claim_submissions(16)
            claims += 1

    await asyncio.gather(*(sender(n) for n in range(CONNECTIONS)), *([claimer()] if claiming else []))
    return latencies, claims


async def scrape_ms(store: SqliteStore, count: int = 50) -> float:
    """Median milliseconds of the store reads one `/metrics` scrape makes."""
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        await store.queue_depths()
        await store.oldest_pending_received_at()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


async def run(directory: Path, backlog: int, patients: int, seconds: float) -> dict[str, float]:
    """Measure an empty store, fill it, measure again."""
    store = await SqliteStore(directory / "gateway.db", PayloadCipher(os.urandom(32))).open(owner=True)
    try:
        scrape_empty = await scrape_ms(store)
        idle, _ = await ack_latencies(store, seconds, claiming=False)
        filled_at = time.perf_counter()
        await fill(store, backlog, patients)
        fill_s = time.perf_counter() - filled_at
        await portal_down(store)
        busy, claims = await ack_latencies(store, seconds, claiming=True)
        scrape_full = await scrape_ms(store)
        stored = sum((await store.queue_depths()).values())
    finally:
        await store.close()
    return {"idle_p50_ms": statistics.median(idle) * 1000, "idle_p99_ms": percentile(idle, 0.99) * 1000,
            "busy_p50_ms": statistics.median(busy) * 1000, "busy_p99_ms": percentile(busy, 0.99) * 1000,
            "busy_acks_per_s": len(busy) / seconds, "idle_acks_per_s": len(idle) / seconds,
            "claims_per_s": claims / seconds, "scrape_empty_ms": scrape_empty, "scrape_full_ms": scrape_full,
            "stored_items": stored, "fill_s": fill_s}


def main() -> int:
    """Print the three figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000, help="pending documents while the portal is down")
    parser.add_argument("--patients", type=int, default=5, help="patients the backlog belongs to")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds of each ACK load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        commit = durable_commit_ms(Path(directory))
        result = asyncio.run(run(Path(directory), args.backlog, args.patients, args.seconds))
    print(f"store on {os.cpu_count()} cores; one durable SQLite commit on this disk: {commit:.2f} ms (median)")
    print(f"ACK commits, {CONNECTIONS} senders, nothing pending:      {result['idle_acks_per_s']:.0f}/s, "
          f"p50 {result['idle_p50_ms']:.2f} ms, p99 {result['idle_p99_ms']:.2f} ms")
    print(f"ACK commits, {args.backlog} pending of {args.patients} patients, portal down, claiming "
          f"{result['claims_per_s']:.0f}/s: {result['busy_acks_per_s']:.0f}/s, p50 {result['busy_p50_ms']:.2f} ms, "
          f"p99 {result['busy_p99_ms']:.2f} ms ({result['busy_p99_ms'] / commit:.1f}x one commit)")
    print(f"scrape reads: {result['scrape_empty_ms']:.2f} ms on an empty store, {result['scrape_full_ms']:.2f} ms "
          f"with {result['stored_items']:.0f} items stored")
    print(json.dumps({"durable_commit_ms": round(commit, 3), "backlog_ack_p99_ms": round(result["busy_p99_ms"], 2),
                      "scrape_ms": [round(result["scrape_empty_ms"], 3), round(result["scrape_full_ms"], 3)],
                      "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
