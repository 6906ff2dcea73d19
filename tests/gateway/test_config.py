"""Settings: TOML plus HBGW_ variables, validated at start-up with one line per bad setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, demo_settings, load_settings

CLI = [str(Path(sys.executable).parent / "healthbook-gateway")]
CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}


def test_defaults_are_the_demo_addresses() -> None:
    settings = load_settings(None, {})
    assert (settings.mllp.host, settings.mllp.port, settings.http.port) == ("127.0.0.1", 2575, 8080)
    assert settings.store.path == Path("var/gateway.db")
    assert demo_settings({}).emulator.enabled and not settings.emulator.enabled


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[mllp]\nport = 2600\nsender_charsets = { OLDHIS = "cp1258" }\n[portal.bhxh]\nusername = "bv"\n')
    settings = load_settings(config, {"HBGW_MLLP__PORT": "2700", "HBGW_PORTAL__BHXH__PASSWORD": "123456",
                                      "HBGW_MLLP__ALLOWED_SENDERS": '[{"address": "10.0.0.0/8"}]'})
    assert settings.mllp.port == 2700 and settings.mllp.sender_charsets == {"OLDHIS": "cp1258"}
    assert settings.portal.bhxh.username == "bv"
    assert settings.portal.bhxh.password.get_secret_value() == "123456"  # kept a string, not parsed as a number
    assert settings.mllp.allowed_senders[0].address == "10.0.0.0/8"


def test_every_bad_setting_gets_its_own_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[facility]\nbhxh_code = "4000000000123"\nmoh_facility_id = "40001"\n[mllp]\nprot = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {"HBGW_HTTP__PORT": "99999"})
    problems = caught.value.problems
    assert len(problems) == 4
    assert any(p.startswith("facility.bhxh_code: ") and "5-character" in p for p in problems)
    assert any(p.startswith("facility.moh_facility_id: ") and "13-digit" in p for p in problems)
    assert any(p.startswith("mllp.prot: unknown setting") for p in problems)
    assert any(p.startswith("http.port: ") and "99999" in p for p in problems)


def test_bad_toml_and_missing_file_are_one_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mllp\nport=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, {})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", {})


def test_check_config_command_exits_2_and_never_echoes_secrets(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[portal.hub]\npassword = 12345\n[store]\nlease_seconds = -1\n')
    result = subprocess.run([*CLI, "check-config", "--config", str(config)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("config error: ") for line in lines)
    assert any("store.lease_seconds" in line for line in lines)
    assert "12345" not in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[facility]\nbhxh_code = "79001"\nmoh_facility_id = "7900000000789"\n')
    result = subprocess.run([*CLI, "check-config", "--config", str(config)], capture_output=True, text=True,
                            env=CLEAN_ENV, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("config OK")
