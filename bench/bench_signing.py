"""The signing stage alone: CPU per message of a signing process (hbgw-sign), beside the RSA signature itself.

The real SigningStage with one signing process assembles, signs and encodes `--messages` admissions
(bench_mllp's, each of its own patient) as bench_gateway's load makes them: batches of 32,
`portal.bhxh.send_files = every_version`, so each becomes one signed XML 130 envelope. Printed: the signing
process's CPU per message (read from /proc, so the pickling and the executor's own work count too), the
gateway process's CPU per message for handing the batches over and taking the results back, and the RSA-2048
signature alone on this machine, the floor that stays. CPU, not wall time: a figure that a busy shared machine
moves least.

    .venv/bin/python bench/bench_signing.py [--messages 960]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mllp import admission

from gateway.builder import SubmissionBuilder
from gateway.config import DEMO_SITE_MAPPINGS, Settings
from gateway.signing import load_signer
from gateway.signing_stage import Fragments, SigningStage
from mappings.hl7v2 import map_message

BATCH = 32  # gateway.mapping_stage.MAPPING_BATCH


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signing_processes() -> list[int]:
    """The pids of this process's children named hbgw-sign."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and (entry / "comm").read_text().strip() == "hbgw-sign":
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


async def run(settings: Settings, batches: list[list[Fragments]]) -> tuple[float, float]:
    """Sign every batch; CPU seconds of the signing process and of this process, warm-up batch excluded."""
    stage = SigningStage(SubmissionBuilder(settings), 1)
    stage.start()
    try:
        await stage.sign(batches[0], {})  # the key is loaded and the caches are warm before anything is counted
        pids = signing_processes()
        signing, gateway = sum(map(process_cpu, pids)), time.process_time()
        for batch in batches[1:]:
            results = [item.result for item in await stage.sign(batch, {})]
            if not all(getattr(result, "submissions", None) for result in results):
                raise RuntimeError(f"a message was not signed: {results}")
        return sum(map(process_cpu, pids)) - signing, time.process_time() - gateway
    finally:
        stage.stop()


def rsa_ms(settings: Settings, repeat: int = 300) -> float:
    """CPU milliseconds of one RSA-2048 PKCS#1 v1.5 SHA-256 signature with the same key."""
    signer = load_signer(settings.signing)
    started = time.process_time()
    for _ in range(repeat):
        signer.sign_hub_message({}, "x")
    return (time.process_time() - started) * 1000 / repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=960, help="admissions signed and counted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings.model_validate({"signing": {"source": "dev", "dev_dir": directory},
                                            "portal": {"bhxh": {"send_files": "every_version"}},
                                            "site_mappings": {"file": str(DEMO_SITE_MAPPINGS)}})
        messages = [map_message(admission(f"S{n:06d}", 100_000 + n).decode()).fragments
                    for n in range(args.messages + BATCH)]
        batches = [messages[start:start + BATCH] for start in range(0, len(messages), BATCH)]
        signing, gateway = asyncio.run(run(settings, batches))
        rsa = rsa_ms(settings)
    counted = len(messages) - BATCH
    figures = {"signing_process_cpu_ms": signing * 1000 / counted, "gateway_cpu_ms": gateway * 1000 / counted,
               "rsa_sign_cpu_ms": rsa}
    print(f"signing stage on {os.cpu_count()} cores, one signing process, {counted} admissions in batches of {BATCH}")
    print(f"  signing process: {figures['signing_process_cpu_ms']:.2f} ms CPU per message "
          f"(of which the RSA signature alone: {rsa:.2f} ms)")
    print(f"  gateway process: {figures['gateway_cpu_ms']:.2f} ms CPU per message (hand-over and results)")
    print(json.dumps({key: round(value, 3) for key, value in figures.items()} |
                     {"load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
