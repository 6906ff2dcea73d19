"""deploy/haproxy/haproxy.cfg is a configuration HAProxy accepts, balancing both listeners over /readyz."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"


def test_haproxy_accepts_the_example() -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"  # installed by scripts/install-system-deps.sh
    result = subprocess.run([haproxy, "-c", "-f", str(CONFIG)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_listeners_go_to_both_nodes_and_only_to_ready_ones() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    backends = dict(re.findall(r"^backend (\S+)\n((?:    .*\n|\n)*?)(?=^\S|\Z)", text, re.MULTILINE))
    assert set(backends) == {"gateway_mllp", "gateway_http"}
    for body in backends.values():
        assert "option httpchk GET /readyz" in body and "http-check expect status 200" in body
        assert len(re.findall(r"^    server node\d \S+ check", body, re.MULTILINE)) == 2
    assert re.search(r"server node1 \S+:2575 check port 8080", backends["gateway_mllp"])
    assert "mode http" not in text  # TCP only: TLS and client certificates end at the gateway
