"""A gateway killed with -9 (an OOM kill, say) leaves no mapping worker behind to linger as an orphan."""
from __future__ import annotations

from pathlib import Path

from gateway.workers import WORKER_NICENESS
from tests.conftest import CORPUS
from tests.e2e.harness import GatewayProcess, children_of, mapping_workers, wait_until


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_mapping_workers_start_with_the_gateway_and_yield_the_cpu_to_it(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    try:
        expected = niceness(gateway.process.pid) + WORKER_NICENESS

        started = wait_until(lambda: mapping_workers(gateway.process.pid), 30,
                             what="mapping workers before any message")
        wait_until(lambda: {niceness(pid) for pid in started} == {expected}, 30, what="workers reniced")
    finally:
        gateway.stop()


def test_mapping_workers_exit_when_the_gateway_is_killed(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")
    wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60, what="message mapped and delivered")
    workers = children_of(gateway.process.pid)
    assert workers, "the gateway should have started at least one mapping worker"
    gateway.process.kill()  # SIGKILL to the gateway alone, not its process group
    gateway.process.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in workers), 20, what="orphaned mapping workers to exit")
