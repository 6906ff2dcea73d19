"""Run the real gateway as a subprocess on free ports with its data in a temporary folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.config import DEMO_SITE_MAPPINGS, load_settings
from tests.conftest import free_port

BIN = Path(sys.executable).parent
# What `serve` refuses unless allowed: these test gateways sign with the development certificate and post
# to a local emulator with its demo passwords.
SERVE_ALLOWS = {"HBGW_SECURITY__ALLOW_DEV_CERTIFICATE": "true", "HBGW_SECURITY__ALLOW_DEMO_PASSWORDS": "true",
                "HBGW_SECURITY__ALLOW_EMPTY_HEAD_CODE": "true"}


@asynccontextmanager
async def gateway_in_process(tmp_path: Path, **environment: str) -> AsyncIterator[Gateway]:
    """The whole gateway in this test's process on free ports, data under tmp_path, portals off, mapping in a
    thread; `environment` adds or overrides HBGW_ settings. Stopped on leaving."""
    settings = load_settings(None, {
        "HBGW_MLLP__PORT": "0", "HBGW_HTTP__PORT": "0", "HBGW_STORE__PATH": str(tmp_path / "gw.db"),
        "HBGW_SIGNING__DEV_DIR": str(tmp_path / "dev-cert"), "HBGW_PIPELINE__MAPPING_PROCESSES": "0",
        "HBGW_PORTAL__BHXH__ENABLED": "false", "HBGW_PORTAL__HUB__ENABLED": "false", **environment})
    running = Gateway(settings)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat: the parent pid
            found.add(int(stat.parent.name))
    return found


def mapping_workers(pid: int) -> set[int]:
    """The mapping worker processes of a gateway (spawned: their command line runs spawn_main), not
    multiprocessing's resource tracker."""
    workers = set()
    for child in children_of(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(child)
        except OSError:
            continue
    return workers


@dataclass
class GatewayProcess:
    """`healthbook-gateway demo` (in-process emulator) or `serve`, configured only by HBGW_ variables."""

    workdir: Path
    command: str = "demo"
    extra_env: dict[str, str] = field(default_factory=dict)
    mllp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        var = self.workdir / "var"
        env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
        env.update({
            "HBGW_MLLP__PORT": str(self.mllp_port), "HBGW_HTTP__PORT": str(self.http_port),
            "HBGW_EMULATOR__PORT": str(self.emulator_port), "HBGW_CONSOLE__PORT": str(self.console_port),
            "HBGW_PORTAL__BHXH__BASE_URL": self.emulator_url, "HBGW_PORTAL__HUB__BASE_URL": self.emulator_url,
            "HBGW_STORE__PATH": str(var / "gateway.db"), "HBGW_SIGNING__DEV_DIR": str(var / "dev-cert"),
            "HBGW_LOGGING__FORMAT": "json", "HBGW_PIPELINE__POLL_INTERVAL_SECONDS": "0.2",
            "HBGW_PIPELINE__BACKOFF_BASE_SECONDS": "0.2", "HBGW_PIPELINE__BACKOFF_MAX_SECONDS": "2",
            "HBGW_SITE_MAPPINGS__FILE": str(DEMO_SITE_MAPPINGS),  # the sample codes, as a hospital maps its own
            # the delivery tests count one portal acceptance per admission they send; BHXH itself gets an
            # episode's files once it is finished (the default, tests/e2e/test_bhxh_path.py)
            "HBGW_PORTAL__BHXH__SEND_FILES": "every_version",
        })
        if self.command == "serve":
            env.update(SERVE_ALLOWS)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(BIN / "healthbook-gateway"), self.command], cwd=self.workdir,
                                        env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_until(self._ready, timeout, what=f"gateway ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
        return http_json(f"{self.http_url}/readyz", timeout=1.0)["status"] == "ready"

    def kill9(self) -> None:
        """SIGKILL the gateway and its mapping workers at once, as a crash of the whole service would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("gateway did not stop within 30 s of SIGTERM") from None

    def mllp_send(self, message_file: Path) -> str:
        """Send a file of messages with python-hl7's real `mllp_send`; returns the ACKs it printed."""
        result = subprocess.run(
            [str(BIN / "mllp_send"), "--loose", "--file", str(message_file), "--port", str(self.mllp_port),
             "127.0.0.1"], capture_output=True, timeout=60, check=True)
        return result.stdout.decode("utf-8", errors="replace")

    def emulator_stats(self) -> dict[str, Any]:
        return http_json(f"{self.emulator_url}/_emulator/stats")

    def queue_depths(self) -> dict[tuple[str, str], float]:
        """The gateway's own queue-depth gauges, by (queue, state), read from /metrics."""
        depths = {}
        for line in http_text(f"{self.http_url}/metrics").splitlines():
            if line.startswith("healthbook_gateway_queue_depth{"):
                labels, value = line.rsplit(" ", 1)
                pairs = dict(part.split("=", 1) for part in labels[labels.index("{") + 1:-1].split(","))
                depths[(pairs["queue"].strip('"'), pairs["state"].strip('"'))] = float(value)
        return depths

    def work_left(self) -> float:
        """Acknowledged items not yet delivered nor dead."""
        return sum(count for (_, state), count in self.queue_depths().items()
                   if state in ("received", "pending", "in_flight"))
