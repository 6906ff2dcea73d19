"""Durable MLLP acknowledgements per second, p50 and p99, at 1, 4 and 16 connections, beside python-hl7.

Each server runs in its own process; the load generator (this process) keeps every connection busy with
one message in flight, as an HIS interface does, and counts only AA answers.
- gateway: the real ACK path: MllpServer -> Hl7Intake (real mappings screen) -> Store (SQLite WAL,
  synchronous=FULL, group commit, AES-GCM payloads); every ACK is sent after its fsync'd commit.
- the whole product: `healthbook-gateway serve` with the portal emulator in its own process, every ACKed
  admission mapped, signed and delivered while the load runs (the pipeline competes with the ACK path).
- python-hl7: `hl7.mllp.start_hl7_server` with a handler that parses and ACKs at once, keeping nothing.
The ratio is gateway / python-hl7 ACKs per second at the same load. Beside them, the latency of one durable
SQLite commit on the same disk, the floor of any durable ACK: the one-connection line gives the serial ACK
rate as a ratio to python-hl7's and the median ACK as a multiple of that commit.

    .venv/bin/python bench/bench_mllp.py [--seconds 5] [--connections 1 4 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = b"\x0b", b"\x1c\r"


def durable_commit_ms(directory: Path, count: int = 200) -> float:
    """Median milliseconds of one committed, fsync'd single-row transaction on this disk: the floor of a
    durable acknowledgement."""
    db = sqlite3.connect(directory / "commit.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (payload) VALUES (?)", (os.urandom(1200),))
        db.execute("COMMIT")
        timings.append(time.perf_counter() - started)
    db.close()
    return statistics.median(timings) * 1000
TARGET_ACKS_PER_SECOND = 2000


def admission(control_id: str, patient: int = 12345) -> bytes:
    """A realistic ADT^A01 (the corpus admission's shape) with its own control id and visit number, for
    one of a million patients (the last six digits of a valid CCCD), so a backlog spans many patients."""
    return ("MSH|^~\\&|HIS_BVDK|BVDK_NGHEAN^4000000000123^L|HBGW|BYT|20260312083015+0700||ADT^A01^ADT_A01|"
            f"{control_id}|P|2.5|||||VNM|UNICODE UTF-8\r"
            "EVN|A01|20260312083000+0700\r"
            f"PID|1||BN26001234^^^BVDKNA^MR~040085{patient % 1_000_000:06d}^^^BCA^NNVNM~GD4404012345678^^^BHXH^HC||"
            "NGUYỄN^VĂN AN^^^^^L||19850214|M|||Số 12 đường Lê Lợi^^Phường Vinh Hưng^Nghệ An^^VNM^H||"
            "0912345678^PRN^PH|||M||||||01^Kinh^VNDT||||VNM\r"
            "PV1|1|I|NOI-TM^P302^G2^BVDKNA||||CCHN-000123-NA^TRẦN^THỊ BÌNH^^^BS|||MED|||||||"
            f"CCHN-000123-NA^TRẦN^THỊ BÌNH^^^BS|IP|V{control_id}|||||||||||||||||||||||||20260312082500+0700|\r"
            "DG1|1||I10^Tăng huyết áp vô căn (nguyên phát)^I10||20260312|A\r"
            "OBX|1|NM|8867-4^Nhịp tim^LN||88|/min|60-100|N|||F|||\r").encode()


# ---- servers (each runs in a child process) ------------------------------------------------------

async def serve_gateway(port: int, directory: Path) -> None:
    """The gateway's MLLP listener, intake and durable store, configured as in production."""
    from adapters.mllp import MllpServer
    from gateway.config import MllpSettings, StoreSettings
    from gateway.encryption import load_cipher
    from gateway.intake import Hl7Intake
    from gateway.logs import configure_logging
    from gateway.metrics import Metrics
    from gateway.store import SqliteStore
    from mappings.hl7v2 import screen

    configure_logging("info", "json")
    settings = MllpSettings(port=port)
    store_settings = StoreSettings(path=directory / "gateway.db")
    metrics = Metrics()
    store = await SqliteStore(store_settings.path, load_cipher(store_settings),
                        max_batch=store_settings.group_commit_max_batch,
                        max_delay_ms=store_settings.group_commit_max_delay_ms,
                        on_batch=metrics.group_commit_batch.observe).open(owner=True)
    intake = Hl7Intake(store, metrics, settings, screen)
    server = MllpServer(intake.store_and_ack, host="127.0.0.1", port=port,
                        max_message_bytes=settings.max_message_bytes, idle_timeout=settings.idle_timeout_seconds,
                        max_connections=settings.max_connections)
    await server.start()
    await asyncio.Event().wait()


async def serve_python_hl7(port: int) -> None:
    """python-hl7's asyncio MLLP server, answering every message with its own create_ack()."""
    import hl7.mllp

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    async with await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=port, encoding="utf-8") as server:
        await server.serve_forever()


# ---- load generator ------------------------------------------------------------------------------

def patient_of(number: int, sequence: int, patients: int) -> int:
    """A patient of its own for every message, or one of `patients` when that is given."""
    patient = number * 50_000 + sequence
    return patient % patients if patients else patient


async def connection_load(port: int, number: int, until: float, warmup_until: float,
                          latencies: list[float], patients: int = 0, count: int = 0, interval: float = 0.0,
                          phase: float = 0.0) -> int:
    """Send one message at a time until `until` (or `count` messages); record latencies after warm-up;
    return the AAs counted. With an `interval`, messages are due at that spacing (a paced sender, as a HIS
    with a steady feed) and each latency runs from when the message was due, so a late answer also counts
    against the messages that had to wait behind it (no coordinated omission). `phase` (0-1) offsets this
    sender's first message, so paced senders do not all send at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted = sequence = 0
    due = time.perf_counter() + interval * phase
    try:
        while (now := time.perf_counter()) < until and (not count or sequence < count):
            if interval:
                if due > now:
                    await asyncio.sleep(due - now)
                now, due = due, due + interval
            sequence += 1
            control_id = f"B{os.getpid()}C{number}N{sequence}{int(until)}{time.monotonic_ns() % 1_000_000}"
            writer.write(START + admission(control_id, patient_of(number, sequence, patients)) + END)
            await writer.drain()
            answer = await reader.readuntil(END)
            done = time.perf_counter()
            if now >= warmup_until and b"MSA|AA|" in answer:
                accepted += 1
                latencies.append(done - now)
    finally:
        writer.close()
    return accepted


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux /proc), to cost each ACK."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def preload(port: int, count: int, connections: int, patients: int = 0) -> int:
    """Send `count` messages as fast as `connections` senders can, timing nothing; returns the AAs."""
    until = time.perf_counter() + 3600
    shares = [count // connections + (1 if n < count % connections else 0) for n in range(connections)]
    return sum(await asyncio.gather(*(connection_load(port, 1000 + n, until, 0.0, [], patients, share)
                                      for n, share in enumerate(shares) if share)))


async def measure(port: int, server_pid: int, connections: int, seconds: float, warmup: float,
                  patients: int = 0, rate: float = 0.0) -> dict[str, float]:
    """ACKs per second, latency percentiles and server CPU per ACK for `connections` connections: each busy
    (the next message as soon as the ACK is in), or with a `rate`, all together offering that many messages
    a second, evenly spread."""
    latencies: list[float] = []
    start = time.perf_counter()
    warmup_until, until = start + warmup, start + warmup + seconds
    interval = connections / rate if rate else 0.0
    loads = [asyncio.create_task(connection_load(port, n, until, warmup_until, latencies, patients,
                                                 interval=interval, phase=n / connections))
             for n in range(connections)]
    await asyncio.sleep(warmup)
    cpu_before = cpu_seconds(server_pid)
    total = sum(await asyncio.gather(*loads))
    cpu = cpu_seconds(server_pid) - cpu_before
    latencies.sort()
    if not latencies:
        raise RuntimeError("no message was acknowledged with AA")
    return {"acks_per_s": total / seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, "cpu_us_per_ack": cpu / total * 1e6}


def free_port() -> int:
    """A port no one listens on, so each server run is independent."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Block until the server accepts connections, so start-up time is not measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


def run_server(kind: str, connection_counts: list[int], seconds: float, warmup: float) -> dict[int, dict]:
    """Start one server process, measure each load against it, stop it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as directory:
        port = free_port()
        log = Path(directory) / "server.log"
        process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                    "--dir", directory], stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process)
            return {count: asyncio.run(measure(port, process.pid, count, seconds, warmup))
                    for count in connection_counts}
        finally:
            process.terminate()
            process.wait(timeout=30)


def run_product(connection_counts: list[int], seconds: float, warmup: float) -> dict[int, dict]:
    """The whole product as a hospital runs it: `healthbook-gateway serve` (listener, mapping and signing
    workers, submission) with the portal emulator in its own process; every ACKed admission is also mapped,
    signed and delivered while the load runs, so the pipeline competes with the ACK path as it does in use."""
    from bench_gateway import start_product, stop_product
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as directory:
        emulator, gateway = start_product(Path(directory))
        try:
            assert gateway.process is not None
            return {count: asyncio.run(measure(gateway.mllp_port, gateway.process.pid, count, seconds, warmup))
                    for count in connection_counts}
        finally:
            stop_product(emulator, gateway)


def main() -> int:
    """Measure both servers at each load and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each load")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--serve", choices=["gateway", "python-hl7"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "gateway":
        asyncio.run(serve_gateway(args.port, args.dir))
        return 0
    if args.serve == "python-hl7":
        asyncio.run(serve_python_hl7(args.port))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-commit-") as directory:
        commit_ms = durable_commit_ms(Path(directory))
    gateway = run_server("gateway", args.connections, args.seconds, args.warmup)
    product = run_product(args.connections, args.seconds, args.warmup)
    baseline = run_server("python-hl7", args.connections, args.seconds, args.warmup)
    print(f"MLLP ACKs on {os.cpu_count()} cores, {args.seconds:.0f} s per load, one message in flight per connection")
    print("CPU us/ACK: the server's own CPU per acknowledgement (all threads), robust to a busy machine")
    print(f"{'conns':>5} | {'gateway ACK/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/ACK':>10} | "
          f"{'python-hl7 ACK/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/ACK':>10} | {'ratio':>5}")
    for count in args.connections:
        g, b = gateway[count], baseline[count]
        print(f"{count:>5} | {g['acks_per_s']:>13.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} "
              f"{g['cpu_us_per_ack']:>10.0f} | "
              f"{b['acks_per_s']:>16.0f} {b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} {b['cpu_us_per_ack']:>10.0f} | "
              f"{g['acks_per_s'] / b['acks_per_s']:>5.2f}")
    print("the whole product (serve: listener, mapping, signing and delivery to the emulator, all running):")
    for count in args.connections:
        g, b = product[count], baseline[count]
        print(f"{count:>5} | {g['acks_per_s']:>13.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} "
              f"{g['cpu_us_per_ack']:>10.0f} | {'':>16} {'':>7} {'':>7} {'':>10} | "
              f"{g['acks_per_s'] / b['acks_per_s']:>5.2f}")
    print(f"one durable SQLite commit (WAL, synchronous=FULL, one row) on the same disk: {commit_ms:.2f} ms median")
    if 1 in gateway:
        for name, results in (("listener alone", gateway), ("whole product", product)):
            serial, peer = results[1], baseline[1]
            print(f"one connection, serial, {name}: {serial['acks_per_s'] / peer['acks_per_s']:.2f}x python-hl7's "
                  f"rate; median ACK {serial['p50_ms']:.2f} ms = {serial['p50_ms'] / commit_ms:.2f}x one durable commit")
    best = max(result["acks_per_s"] for result in gateway.values())
    serial_ratio = {name: round(results[1]["acks_per_s"] / baseline[1]["acks_per_s"], 2)
                    for name, results in (("listener", gateway), ("product", product)) if 1 in results}
    print(json.dumps({"gateway_best_durable_acks_per_s": round(best), "target": TARGET_ACKS_PER_SECOND,
                      "serial_ratio_to_python_hl7": serial_ratio,
                      "durable_commit_ms": round(commit_ms, 3),
                      "meets_target": best >= TARGET_ACKS_PER_SECOND, "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
