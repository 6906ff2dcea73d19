"""The whole gateway under an MLLP burst: durable ACKs/s while the pipeline works, then how fast it drains.

bench_mllp.py measures the acknowledgement path alone. Here the real `healthbook-gateway serve` process
runs everything a hospital runs: the MLLP listener and group commit, and beside them the mapping worker
process, XML-DSig signing and submission to the portal. The portal emulator is a separate process on
the same machine (it parses the XML 130 and verifies each signature, so it takes CPU a real portal would
not: the drain figures are a floor).

Phase 1, burst: `--connections` senders keep one message each in flight for `--seconds`; each message is
an admission of its own patient and visit, so it becomes one document and one submission.
Phase 2, drain: no more input; the gateway's own queue gauges are polled until every acknowledged message
is mapped (inbox empty) and delivered (outbox empty), and the emulator must hold exactly one accepted
submission per acknowledged message.

    .venv/bin/python bench/bench_gateway.py [--seconds 5] [--connections 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mllp import TARGET_ACKS_PER_SECOND, free_port, measure  # noqa: E402
from tests.e2e.harness import GatewayProcess, http_json, wait_until  # noqa: E402

DRAIN_TIMEOUT = 900.0


def start_emulator(port: int, log: Path) -> subprocess.Popen:
    """The portal emulator in its own process, as the national portal is outside the gateway."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "healthbook-gateway"), "portal-emulator",
                                "--port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: http_json(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1.0), 30, what="emulator")
    return process


def drain(gateway: GatewayProcess, since: float) -> tuple[float, float]:
    """Seconds from `since` until the inbox, then the outbox, hold nothing acknowledged and undone."""
    mapped_at = None
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        depths = gateway.queue_depths()
        if mapped_at is None and depths.get(("inbox", "received"), 0) == 0:
            mapped_at = time.perf_counter()
        if mapped_at is not None and gateway.work_left() == 0:
            return mapped_at - since, time.perf_counter() - since
        time.sleep(0.25)
    raise RuntimeError(f"the backlog did not drain within {DRAIN_TIMEOUT:.0f} s")


def run(connections: int, seconds: float, warmup: float, directory: Path,
        extra_env: dict[str, str] | None = None) -> dict[str, float]:
    """One burst and its drain against a fresh gateway (settings from `extra_env`) and emulator."""
    emulator_port = free_port()
    emulator = start_emulator(emulator_port, directory / "emulator.log")
    gateway = GatewayProcess(directory / "gateway", command="serve", emulator_port=emulator_port,
                             extra_env={"HBGW_EMULATOR__ENABLED": "false", **(extra_env or {})})
    try:
        gateway.start()
        assert gateway.process is not None
        started = time.perf_counter()
        burst = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup))
        burst_end = time.perf_counter()
        mapped_after, delivered_after = drain(gateway, burst_end)
        stats = gateway.emulator_stats()
        acknowledged = sum(count for (queue, state), count in gateway.queue_depths().items() if queue == "inbox")
    finally:
        gateway.stop()
        emulator.terminate()
        emulator.wait(timeout=30)
    accepted = stats["accepted_keys"]
    if len(accepted) != len(set(accepted)) or len(accepted) != acknowledged:
        raise RuntimeError(f"{acknowledged:.0f} acknowledged but the portal accepted {len(accepted)} "
                           f"({len(set(accepted))} distinct)")
    return {**burst, "acknowledged": acknowledged, "mapped_s": burst_end - started + mapped_after,
            "delivered_s": burst_end - started + delivered_after, "drain_after_burst_s": delivered_after}


def main() -> int:
    """Run the burst and drain, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds of burst")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before the burst is timed")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as directory:
        result = run(args.connections, args.seconds, args.warmup, Path(directory))
    total = result["acknowledged"]
    print(f"whole gateway on {os.cpu_count()} cores, {args.connections} connections for "
          f"{args.warmup:.0f}+{args.seconds:.0f} s, pipeline and portal emulator running beside the listener")
    print(f"burst:  {result['acks_per_s']:.0f} durable ACK/s, p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, {result['cpu_us_per_ack']:.0f} us CPU/ACK in the main process")
    print(f"drain:  {total:.0f} acknowledged messages; all mapped after {result['mapped_s']:.1f} s "
          f"({total / result['mapped_s']:.0f}/s), all delivered exactly once after {result['delivered_s']:.1f} s "
          f"({total / result['delivered_s']:.0f}/s), {result['drain_after_burst_s']:.1f} s after the burst ended")
    print(json.dumps({"gateway_burst_acks_per_s": round(result["acks_per_s"]), "target": TARGET_ACKS_PER_SECOND,
                      "meets_target": result["acks_per_s"] >= TARGET_ACKS_PER_SECOND,
                      "delivered_per_s": round(total / result["delivered_s"], 1),
                      "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
