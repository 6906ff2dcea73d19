"""The whole gateway on each store backend in one run: durable ACKs/s and delivered documents/s, side by side.

The same burst and drain as bench_gateway.py (real `serve` process, mapping, signing, a portal emulator
process verifying every signature), once on SQLite and once on PostgreSQL. The PostgreSQL server is a
throwaway one started for the run (tests/pg_cluster.py: initdb in a temporary folder, fsync on, removed
afterwards) on the same machine, so it shares the cores with the gateway and the load generator; on a real database
server the PostgreSQL figures are higher. Kept short by default: the machine may be shared.

    .venv/bin/python bench/bench_backends.py [--seconds 3] [--connections 8]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_gateway import drain, start_emulator
from bench_mllp import free_port, measure

from tests.e2e.harness import GatewayProcess
from tests.pg_cluster import PostgresCluster


def run(connections: int, seconds: float, warmup: float, directory: Path, settings: dict[str, str]) -> dict[str, float]:
    """One burst and its drain against a fresh gateway on the given store settings and a fresh emulator."""
    emulator_port = free_port()
    emulator = start_emulator(emulator_port, directory / "emulator.log")
    gateway = GatewayProcess(directory / "gateway", command="serve", emulator_port=emulator_port,
                             extra_env={"HBGW_EMULATOR__ENABLED": "false",
                                        "HBGW_PORTAL__BHXH__SEND_FILES": "every_version", **settings})
    try:
        gateway.start()
        assert gateway.process is not None
        started = time.perf_counter()
        burst = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup))
        drain(gateway)
        elapsed = time.perf_counter() - started
        accepted = gateway.emulator_stats()["accepted_keys"]
    finally:
        gateway.stop()
        emulator.terminate()
        emulator.wait(timeout=30)
    if len(accepted) != len(set(accepted)):
        raise RuntimeError(f"the portal accepted {len(accepted)} submissions but only {len(set(accepted))} distinct")
    return {**burst, "delivered": len(accepted), "delivered_s": elapsed}


def main() -> int:
    """Run the burst and drain on both backends, print one line each and a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds of burst per backend")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before the burst is timed")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    cluster = PostgresCluster().start(durable=True)  # fsync on, as in production
    results = {}
    try:
        backends = {
            "sqlite": {},
            "postgresql": {"HBGW_STORE__BACKEND": "postgresql", "HBGW_STORE__DSN": cluster.new_database(),
                           "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()},
        }
        for name, settings in backends.items():
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as directory:
                results[name] = run(args.connections, args.seconds, args.warmup, Path(directory), settings)
    finally:
        cluster.stop()
    print(f"whole gateway on {os.cpu_count()} cores, {args.connections} connections for "
          f"{args.warmup:.0f}+{args.seconds:.0f} s per backend; PostgreSQL on the same machine")
    summary = {}
    for name, result in results.items():
        delivered_per_s = result["delivered"] / result["delivered_s"]
        print(f"{name:<10}  {result['acks_per_s']:6.0f} durable ACK/s (p99 {result['p99_ms']:.1f} ms)   "
              f"{delivered_per_s:6.1f} documents/s delivered exactly once ({result['delivered']:.0f} documents)")
        summary[name] = {"acks_per_s": round(result["acks_per_s"]), "delivered_per_s": round(delivered_per_s, 1)}
    print(json.dumps({**summary, "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
