"""ACKs while a few patients have a long backlog and the portal is down: the whole gateway, ACK p99 and scrape.

A long inpatient stay while the portal is down leaves thousands of documents waiting behind each patient's
first one (a patient's documents go out in order). The ACK path must not notice: it depends on nothing but
its own commit. The real `healthbook-gateway serve` process runs with its portal pointed at a port where
nothing listens:
1. `--backlog` admissions of `--patients` patients are sent (untimed) and mapped and signed, until every one
   waits in the outbox behind its patient's first document, which is retried with backoff;
2. `--connections` senders offer `--rate` messages a second together for `--seconds` (a busy hospital's
   steady feed; p50 and p99 from when each message was due), then keep one message each in flight for
   `--seconds` (saturated): durable ACKs/s, p50 and p99 (each message a new patient);
3. `/metrics` is scraped 20 times on the empty store and again on the full one: median milliseconds.

    .venv/bin/python bench/bench_backlog.py [--backlog 10000] [--patients 5] [--seconds 5] [--connections 16]
        [--rate 50]
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

from bench_mllp import free_port, measure, preload

from tests.e2e.harness import GatewayProcess, http_text

MAPPING_TIMEOUT = 3600.0


def scrape_ms(gateway: GatewayProcess, count: int = 20) -> float:
    """Median milliseconds of one `/metrics` scrape, as Prometheus makes it."""
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        http_text(f"{gateway.http_url}/metrics")
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def wait_mapped(gateway: GatewayProcess, expected: int) -> float:
    """Seconds until `expected` messages are mapped and none waits to be."""
    started = time.perf_counter()
    while time.perf_counter() - started < MAPPING_TIMEOUT:
        depths = gateway.queue_depths()
        if depths.get(("inbox", "received"), 0) == 0 and depths.get(("inbox", "mapped"), 0) >= expected:
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError(f"the backlog was not mapped within {MAPPING_TIMEOUT:.0f} s")


def run(backlog: int, patients: int, connections: int, seconds: float, warmup: float, rate: float,
        directory: Path) -> dict[str, float]:
    """Fill a fresh gateway with the backlog, then measure ACKs and scrapes beside it."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every attempt fails at once
    gateway = GatewayProcess(directory / "gateway", command="serve", extra_env={
        "HBGW_EMULATOR__ENABLED": "false", "HBGW_PORTAL__BHXH__BASE_URL": down,
        "HBGW_PORTAL__HUB__BASE_URL": down, "HBGW_PIPELINE__BACKOFF_MAX_SECONDS": "5"})
    try:
        gateway.start()
        assert gateway.process is not None
        scrape_empty = scrape_ms(gateway)
        acknowledged = asyncio.run(preload(gateway.mllp_port, backlog, connections, patients))
        mapping_s = wait_mapped(gateway, acknowledged)
        pending = sum(count for (queue, state), count in gateway.queue_depths().items()
                      if queue == "outbox" and state in ("pending", "in_flight"))
        paced = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup,
                                    rate=rate))
        result = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup))
        scrape_full = scrape_ms(gateway)
    finally:
        gateway.stop()
    return {**result, **{f"paced_{key}": value for key, value in paced.items()},
            "pending": pending, "mapping_s": mapping_s, "scrape_empty_ms": scrape_empty,
            "scrape_full_ms": scrape_full}


def main() -> int:
    """Print ACK latency beside the backlog, and the scrape times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000, help="pending documents before the measurement")
    parser.add_argument("--patients", type=int, default=5, help="patients the backlog belongs to")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds of ACK load")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before the load is timed")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="messages/s the senders offer in the paced phase (below what the pipeline drains)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as directory:
        r = run(args.backlog, args.patients, args.connections, args.seconds, args.warmup, args.rate,
                Path(directory))
    print(f"whole gateway on {os.cpu_count()} cores, portal down; {r['pending']:.0f} documents of {args.patients} "
          f"patients pending (mapped and signed in {r['mapping_s']:.0f} s); the saturated phase runs after the "
          "paced one, beside the new patients' documents that one left")
    print(f"ACKs at {args.connections} connections beside them, {args.rate:.0f} messages/s offered: "
          f"{r['paced_acks_per_s']:.0f} durable ACK/s, p50 {r['paced_p50_ms']:.2f} ms, p99 {r['paced_p99_ms']:.2f} ms "
          "(from when each was due)")
    print(f"ACKs at {args.connections} connections beside them, senders saturating: "
          f"{r['acks_per_s']:.0f} durable ACK/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
          f"{r['cpu_us_per_ack']:.0f} us CPU/ACK")
    print(f"/metrics scrape: {r['scrape_empty_ms']:.1f} ms on the empty store, {r['scrape_full_ms']:.1f} ms with "
          f"the backlog stored (median of 20)")
    print(json.dumps({"pending": r["pending"],
                      "ack_p99_ms": {"paced": round(r["paced_p99_ms"], 2), "saturated": round(r["p99_ms"], 2)},
                      "acks_per_s": round(r["acks_per_s"]),
                      "scrape_ms": [round(r["scrape_empty_ms"], 2), round(r["scrape_full_ms"], 2)],
                      "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
