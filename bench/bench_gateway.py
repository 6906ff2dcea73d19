"""The whole gateway: documents delivered per second, CPU per message per stage, ACKs while a backlog drains,
and bytes of store per delivered message.

The real `healthbook-gateway serve` process runs everything a hospital runs: the MLLP listener and group
commit, the mapping worker processes (hbgw-map), the signing processes (hbgw-sign) and submission to the
portal. The portal emulator is a separate process on the same machine (it parses each XML 130 and verifies
its signature, CPU a real portal spends elsewhere: it is printed apart, and the delivery rate is a floor).

1. Backlog: `--backlog` admissions, each of its own patient and visit, are sent as fast as `--connections`
   senders get their ACKs (untimed); each becomes a document and one signed submission (its XML 130
   files, sent at once rather than held until the discharge).
2. Paced: the same senders offer `--rate` messages a second together (a busy hospital's steady feed) for
   `--seconds` while the pipeline drains the backlog: p50 and p99 from when each message was due.
   Burst: then they keep one message each in flight for `--seconds` (the machine saturated): durable
   ACKs/s, p50 and p99.
3. Drain: no more input; the gateway's own queue gauges are polled until every acknowledged message is
   mapped and delivered, and the emulator must hold exactly one accepted submission per message.
Printed: delivered signed submissions/s from the first message to the last delivery; CPU per message
delivered, of the gateway process, the mapping workers, the signing workers and the
emulator; then, with the gateway stopped, the store's bytes per delivered message (pages in use, and file
growth) and the average sealed message and document.

    .venv/bin/python bench/bench_gateway.py [--backlog 2000] [--seconds 5] [--connections 16] [--rate 50]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mllp import free_port, measure, preload

from tests.e2e.harness import GatewayProcess, children_of, http_json, wait_until

DRAIN_TIMEOUT = 1800.0
# An admission is sent as its XML 130 files at once (portal.bhxh.send_files = every_version, instead of
# holding them until the discharge): one signed submission per message.
SUBMISSIONS_PER_MESSAGE = 1
STAGES = {"gateway": "the gateway process", "hbgw-map": "mapping workers", "hbgw-sign": "signing workers",
          "hbgw-send": "delivery process",
          "emulator": "portal emulator (not the gateway's)"}


def start_emulator(port: int, log: Path) -> subprocess.Popen:
    """The portal emulator in its own process, as the national portal is outside the gateway."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "healthbook-gateway"), "portal-emulator",
                                "--port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: http_json(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1.0), 30, what="emulator")
    return process


def start_product(directory: Path) -> tuple[subprocess.Popen, GatewayProcess]:
    """The portal emulator, then `healthbook-gateway serve` sending to it (an admission's XML 130 files at
    once, one signed submission per message), both started."""
    emulator_port = free_port()
    emulator = start_emulator(emulator_port, directory / "emulator.log")
    gateway = GatewayProcess(directory / "gateway", command="serve", emulator_port=emulator_port,
                             extra_env={"HBGW_EMULATOR__ENABLED": "false",
                                        "HBGW_PORTAL__BHXH__SEND_FILES": "every_version"})
    try:
        gateway.start()
    except BaseException:
        emulator.terminate()
        raise
    time.sleep(2.0)  # the worker processes finish starting before they are measured
    return emulator, gateway


def stop_product(emulator: subprocess.Popen, gateway: GatewayProcess) -> None:
    gateway.stop()
    emulator.terminate()
    emulator.wait(timeout=30)


def process_cpu(pid: int) -> tuple[str, float]:
    """A process's name (/proc/PID/comm) and its user + system CPU seconds so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_cpu(gateway_pid: int, emulator_pid: int) -> dict[str, float]:
    """CPU seconds so far of the gateway, its workers by stage name, and the emulator."""
    cpu = {"gateway": process_cpu(gateway_pid)[1], "emulator": process_cpu(emulator_pid)[1]}
    for child in children_of(gateway_pid):
        try:
            name, seconds = process_cpu(child)
        except OSError:
            continue
        if name in STAGES:
            cpu[name] = cpu.get(name, 0.0) + seconds
    return cpu


def drain(gateway: GatewayProcess) -> float:
    """Seconds until the inbox and the outbox hold nothing acknowledged and undone."""
    started = time.perf_counter()
    while time.perf_counter() - started < DRAIN_TIMEOUT:
        if gateway.work_left() == 0:
            return time.perf_counter() - started
        time.sleep(1.0)  # each look is a /metrics scrape, work for the gateway: Prometheus scrapes every 15 s
    raise RuntimeError(f"the backlog did not drain within {DRAIN_TIMEOUT:.0f} s")


def store_bytes(database: Path) -> tuple[int, int]:
    """The store's size on disk (the file and its write-ahead log), and the bytes its pages in use hold
    (free pages, left by bodies deleted on delivery, are reused by later rows)."""
    on_disk = sum(path.stat().st_size for path in (database, database.with_name(database.name + "-wal"))
                  if path.exists())
    if not database.exists():
        return on_disk, 0
    with sqlite3.connect(database) as db:
        (pages,), (free,), (size,) = (db.execute(f"PRAGMA {name}").fetchone()
                                      for name in ("page_count", "freelist_count", "page_size"))
    return on_disk, (pages - free) * size


def payload_bytes(database: Path) -> dict[str, float]:
    """Average stored (sealed) payload bytes per row of each table, read without the key."""
    with sqlite3.connect(database) as db:
        return {table: db.execute(f"SELECT coalesce(avg(coalesce(length({column}), 0)), 0) FROM {table}").fetchone()[0]
                for table, column in (("messages", "payload"), ("documents", "bundle"))}


def run(connections: int, backlog: int, seconds: float, warmup: float, rate: float,
        directory: Path) -> dict[str, float]:
    """Backlog, burst and drain against a fresh gateway and emulator; then the store's size."""
    emulator, gateway = start_product(directory)
    database = gateway.workdir / "var" / "gateway.db"
    try:
        assert gateway.process is not None
        empty_disk, empty_used = store_bytes(database)
        cpu_before = stage_cpu(gateway.process.pid, emulator.pid)
        started = time.perf_counter()
        asyncio.run(preload(gateway.mllp_port, backlog, connections))
        paced = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup,
                                    rate=rate))
        burst = asyncio.run(measure(gateway.mllp_port, gateway.process.pid, connections, seconds, warmup))
        burst_end, left = time.perf_counter(), gateway.work_left()
        drain_s = drain(gateway)
        elapsed = time.perf_counter() - started
        cpu_after = stage_cpu(gateway.process.pid, emulator.pid)
        stats = gateway.emulator_stats()
        acknowledged = sum(count for (queue, _), count in gateway.queue_depths().items() if queue == "inbox")
    finally:
        stop_product(emulator, gateway)
    accepted = stats["accepted_keys"]
    if len(accepted) != len(set(accepted)) or len(accepted) != SUBMISSIONS_PER_MESSAGE * acknowledged:
        raise RuntimeError(f"{acknowledged:.0f} acknowledged but the portal accepted {len(accepted)} submissions "
                           f"({len(set(accepted))} distinct), not {SUBMISSIONS_PER_MESSAGE} of each")
    delivered = len(accepted)
    disk, used = store_bytes(database)
    cpu = {stage: (cpu_after.get(stage, 0.0) - cpu_before.get(stage, 0.0)) / acknowledged for stage in STAGES}
    return {**burst, **{f"paced_{key}": value for key, value in paced.items()},
            "delivered": delivered, "elapsed_s": elapsed, "left_at_burst_end": left,
            "drain_s": drain_s, "burst_s": burst_end - started,
            **{f"cpu_ms_{stage}": seconds * 1000 for stage, seconds in cpu.items()},
            "disk_bytes_per_delivered": (disk - empty_disk) / acknowledged,
            "bytes_per_delivered": (used - empty_used) / acknowledged,
            **{f"payload_{table}": size for table, size in payload_bytes(database).items()}}


def main() -> int:
    """Run backlog, burst and drain; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=2000, help="messages sent before the measured burst")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds of burst")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before the burst is timed")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="messages/s the senders offer in the paced phase (below what the pipeline drains)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as directory:
        r = run(args.connections, args.backlog, args.seconds, args.warmup, args.rate, Path(directory))
    total = r["delivered"]
    print(f"whole gateway on {os.cpu_count()} cores, portal emulator in its own process; "
          f"{args.backlog} messages of backlog, then {args.connections} connections for {args.warmup:.0f}+"
          f"{args.seconds:.0f} s paced and {args.warmup:.0f}+{args.seconds:.0f} s saturated while it drains")
    print(f"ACKs while draining, {args.rate:.0f} messages/s offered: {r['paced_acks_per_s']:.0f} durable ACK/s, "
          f"p50 {r['paced_p50_ms']:.2f} ms, p99 {r['paced_p99_ms']:.2f} ms (from when each was due)")
    print(f"ACKs while draining, senders saturating: {r['acks_per_s']:.0f} durable ACK/s, p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, {r['cpu_us_per_ack']:.0f} us CPU/ACK in the gateway process")
    print(f"delivered: {total:.0f} signed submissions ({total / SUBMISSIONS_PER_MESSAGE:.0f} messages), each "
          f"exactly once, {total / r['elapsed_s']:.0f}/s from the first message to the last delivery; "
          f"{r['left_at_burst_end']:.0f} items left when input stopped, done in {r['drain_s']:.1f} s")
    print("CPU per delivered message: " + ", ".join(
        f"{description} {r[f'cpu_ms_{stage}']:.2f} ms" for stage, description in STAGES.items()))
    print(f"store: {r['bytes_per_delivered'] / 1024:.1f} KiB per delivered message before the retention purge "
          f"(pages in use; the file grew {r['disk_bytes_per_delivered'] / 1024:.1f} KiB per message, its free pages "
          f"reused by later rows); sealed payloads per row: message {r['payload_messages']:.0f} B, document "
          f"{r['payload_documents']:.0f} B")
    print(json.dumps({"delivered_submissions_per_s": round(total / r["elapsed_s"], 1),
                      "ack_p99_ms_while_draining": {"paced": round(r["paced_p99_ms"], 2),
                                                    "saturated": round(r["p99_ms"], 2)},
                      "cpu_ms_per_message": {stage: round(r[f"cpu_ms_{stage}"], 3) for stage in STAGES},
                      "bytes_per_delivered": round(r["bytes_per_delivered"]), "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
