"""`healthbook-gateway portal-emulator` as a real process: flags, certificate, control endpoints."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.portal.base import Submission
from adapters.portal.emulator.cli import build_parser, config_from_args
from adapters.portal.hub import HubChannel
from gateway.config import HubChannelSettings
from tests.adapters.portal.conftest import deliver_like_the_pipeline
from tests.conftest import free_port

GATEWAY = Path(sys.executable).parent / "healthbook-gateway"


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def running(command: list[str], port: int, log_path: Path) -> Iterator[str]:
    """Start an emulator process, wait until it answers, stop it afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                if process.poll() is not None:
                    raise AssertionError("emulator process exited: " + log_path.read_text())
                try:
                    _call(f"{base_url}/_emulator/stats")
                    break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.1)
            else:
                raise AssertionError("emulator process did not answer: " + log_path.read_text())
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def emulator_process(signer_files: tuple[Path, Path], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "adapters.portal.emulator", "--port", str(port), "--cert", str(signer_files[0]),
               "--username", "facility", "--password", "s3cret-pass", "--seed", "7", "--fail-rate", "0.25"]
    with running(command, port, tmp_path / "emulator.log") as base_url:
        yield base_url


def test_the_gateway_command_starts_the_emulator_on_the_given_port(tmp_path: Path) -> None:
    port = free_port()
    with running([str(GATEWAY), "portal-emulator", "--port", str(port)], port, tmp_path / "emulator.log") as url:
        assert _call(f"{url}/_emulator/stats")["verifies_against_configured_cert"] is False


def test_flags_become_the_emulator_configuration(signer_files: tuple[Path, Path]) -> None:
    args = build_parser().parse_args(["--port", "9001", "--cert", str(signer_files[0]), "--drop-rate", "0.1",
                                      "--retry-after", "3", "--token-ttl", "60", "--seed", "5"])
    config = config_from_args(args)
    assert (config.port, config.seed, config.faults.drop_rate, config.faults.retry_after,
            config.faults.token_ttl) == (9001, 5, 0.1, 3.0, 60.0)
    assert config.cert_pem == signer_files[0].read_bytes()


def test_a_rate_outside_0_to_1_is_refused_by_the_command_line() -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--fail-rate", "1.5"])
    assert caught.value.code == 2


async def test_the_emulator_process_verifies_against_its_cert_and_is_controlled_over_http(
        emulator_process: str, make_hub: Callable[..., Submission]) -> None:
    assert _call(f"{emulator_process}/_emulator/faults")["fail_rate"] == 0.25
    channel = HubChannel(HubChannelSettings(base_url=emulator_process, username="facility",
                                            password="s3cret-pass"), name="moh_checkup")
    try:
        await deliver_like_the_pipeline(channel, [make_hub(f"KSK-{number}") for number in range(5)])
    finally:
        await channel.close()
    stats = _call(f"{emulator_process}/_emulator/stats")
    assert sorted(stats["accepted_keys"]) == [f"KSK-{number}:v1" for number in range(5)]
    assert stats["verifies_against_configured_cert"] is True
    assert _call(f"{emulator_process}/_emulator/faults", {"fail_rate": 0})["fail_rate"] == 0
    assert _call(f"{emulator_process}/_emulator/reset", {})["reset"] is True
    assert _call(f"{emulator_process}/_emulator/stats")["accepted_keys"] == []


def test_bhxh_accounts_come_from_repeatable_flags() -> None:
    args = build_parser().parse_args(["--bhxh-account", "40001_BV:one:40001",
                                      "--bhxh-account", "79001_BV:two:79001,79002", "--bhxh-account", "any_BV:three"])
    accounts = config_from_args(args).bhxh_accounts
    assert [(a.username, a.password, a.facilities) for a in accounts] == [
        ("40001_BV", "one", ("40001",)), ("79001_BV", "two", ("79001", "79002")), ("any_BV", "three", ())]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--bhxh-account", "no-password"])
