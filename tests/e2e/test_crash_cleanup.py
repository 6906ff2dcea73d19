"""A gateway killed with -9 (an OOM kill, say) leaves no mapping worker behind to linger as an orphan."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import CORPUS
from tests.e2e.harness import GatewayProcess, wait_until


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat: the parent pid
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_mapping_workers_exit_when_the_gateway_is_killed(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")  # the first message starts a mapping worker
    wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60, what="message mapped and delivered")
    workers = children_of(gateway.process.pid)
    assert workers, "the gateway should have started at least one mapping worker"
    gateway.process.kill()  # SIGKILL to the gateway alone, not its process group
    gateway.process.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in workers), 20, what="orphaned mapping workers to exit")
