"""The queue commands and the console answer beside a gateway draining a same-patient backlog with the
portal down: no lock error, no traceback, an answer every time (the times are printed, not asserted).
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from gateway.console.accounts import hash_password
from tests.conftest import free_port
from tests.e2e.harness import BIN, GatewayProcess
from tests.gateway.intake_harness import hl7

BACKLOG = 400
PASSWORD = "operator-password-1"


def same_patient_backlog(path: Path) -> None:
    """BACKLOG admissions of one patient, each its own visit: each waits behind the one before it."""
    path.write_text("".join(hl7(f"LOAD{n}").replace("VV1", f"VV{n}") for n in range(BACKLOG)), encoding="utf-8")


def console_opener(gateway: GatewayProcess) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"{gateway.console_url}/login", timeout=30).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"name": "olga", "password": PASSWORD, "csrf": token}).encode()
    assert opener.open(f"{gateway.console_url}/login", data=form, timeout=30).status == 200
    return opener


def timed(what: str, timings: list[tuple[str, float]], run):
    started = time.monotonic()
    result = run()
    timings.append((what, time.monotonic() - started))
    return result


def test_status_dlq_list_and_the_console_answer_beside_a_draining_backlog(tmp_path: Path) -> None:
    dead_portal = f"http://127.0.0.1:{free_port()}"  # nothing listens: every submission fails and waits
    gateway = GatewayProcess(tmp_path, extra_env={
        "HBGW_PORTAL__BHXH__BASE_URL": dead_portal, "HBGW_PORTAL__HUB__BASE_URL": dead_portal,
        "HBGW_CONSOLE__DEMO_ACCOUNT": "false",
        "HBGW_CONSOLE__ACCOUNTS": json.dumps([{"name": "olga", "role": "operator",
                                               "password_hash": hash_password(PASSWORD)}])}).start()
    cli_env = {**gateway.env(), "HBGW_LOGGING__LEVEL": "warning"}
    timings: list[tuple[str, float]] = []
    try:
        backlog = tmp_path / "backlog.hl7"
        same_patient_backlog(backlog)
        sender = subprocess.Popen(
            [str(BIN / "mllp_send"), "--loose", "--file", str(backlog), "--port", str(gateway.mllp_port),
             "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opener = console_opener(gateway)
        seen_backlog = False
        rounds = 0
        while rounds < 3 or sender.poll() is None:
            rounds += 1
            for command in (["status"], ["dlq", "list"]):
                result = timed(" ".join(command), timings, lambda command=command: subprocess.run(
                    [str(BIN / "healthbook-gateway"), *command], capture_output=True, text=True, env=cli_env,
                    cwd=tmp_path, timeout=120, check=False))
                assert result.returncode == 0, result.stderr
                assert "locked" not in result.stderr and "Traceback" not in result.stderr, result.stderr
                if command == ["status"]:
                    status = json.loads(result.stdout)
                    seen_backlog |= status["inbox"].get("received", 0) + status["outbox"].get("pending", 0) > 1
            for page in ("/", "/channels", "/messages?control_id=LOAD7", "/dead"):
                answer = timed(f"console {page}", timings,
                               lambda page=page: opener.open(f"{gateway.console_url}{page}", timeout=120))
                assert answer.status == 200
        assert sender.wait(timeout=300) == 0, sender.stderr.read() if sender.stderr else ""
        assert seen_backlog, "the commands ran while a backlog was there"
        found = opener.open(f"{gateway.console_url}/messages?control_id=LOAD7", timeout=120).read().decode()
        assert ">LOAD7<" in found
    finally:
        gateway.stop()
        for what, seconds in timings:
            print(f"{what}: {seconds:.2f} s")
    assert "database is locked" not in gateway.log_path.read_text()
