"""Settings: TOML plus HBGW_ variables, validated at start-up with one line per bad setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, demo_settings, load_settings
from tests.e2e.harness import SERVE_ALLOWS

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
                            env={"PATH": "/usr/bin:/bin"}, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("config error: ") for line in lines)
    assert any("store.lease_seconds" in line for line in lines)
    assert "12345" not in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[facility]\nbhxh_code = "79001"\nmoh_facility_id = "7900000000789"\nhead_code = "79123"\n'
                      '[security]\nallow_dev_certificate = true\n'
                      '[portal.bhxh]\nbase_url = "https://bhxh.example"\n[portal.hub]\nbase_url = "https://hub.example"\n')
    env = {**CLEAN_ENV, "HBGW_PORTAL__BHXH__PASSWORD": "s3cret-1", "HBGW_PORTAL__HUB__PASSWORD": "s3cret-2"}
    result = subprocess.run([*CLI, "check-config", "--config", str(config)], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("config OK")


def test_text_settings_from_the_environment_stay_text() -> None:
    settings = load_settings(None, {"HBGW_FACILITY__MOH_FACILITY_ID": "4000000000123",
                                    "HBGW_FACILITY__BHXH_CODE": "40001", "HBGW_PORTAL__BHXH__USERNAME": "123456",
                                    "HBGW_SIGNING__PKCS11_PIN": "00123456", "HBGW_SIGNING__PKCS12_PASSWORD": "123456"})
    assert settings.facility.moh_facility_id == "4000000000123" and settings.facility.bhxh_code == "40001"
    assert settings.portal.bhxh.username == "123456"
    assert settings.signing.pkcs11_pin.get_secret_value() == "00123456"  # leading zeros kept
    assert settings.signing.pkcs12_password.get_secret_value() == "123456"


@pytest.mark.parametrize("name, value", [
    ("HBGW_PORTAL__BHXH__PASSWROD", "S3cr3t-Passw0rd!"),  # misspelled: unknown, still never echoed
    ("HBGW_SIGNING__PKCS12_PASWORD", "p12secret"),
    ("HBGW_HTTP__FHIR_SENDERS", '[{"name": "his", "token_sha256": "plain-token-123"}]'),
])
def test_error_lines_never_echo_unknown_or_secret_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {name: value})
    assert caught.value.problems and all(value not in line and "plain-token-123" not in line
                                         for line in caught.value.problems)


@pytest.mark.parametrize("env, expected", [
    ({"HBGW_STORE__ENCRYPTION_KEY": "not-a-valid-key"}, "store.encryption_key: not valid base64"),
    ({"HBGW_STORE__ENCRYPTION_KEY_FILE": "/nonexistent/store.key"}, "store.encryption_key_file"),
    ({"HBGW_SIGNING__SOURCE": "pem"}, "signing.cert_file"),
])
def test_check_config_refuses_what_start_up_would_refuse(tmp_path: Path, env: dict, expected: str) -> None:
    result = subprocess.run([*CLI, "check-config"], capture_output=True, text=True, cwd=tmp_path,
                            env={**CLEAN_ENV, **env}, timeout=60, check=False)
    assert result.returncode == 2 and expected in result.stderr
    assert "not-a-valid-key" not in result.stderr
    assert not (tmp_path / "var").exists()  # checking creates nothing


def test_serve_with_a_bad_key_exits_2_so_systemd_does_not_restart_it(tmp_path: Path) -> None:
    env = {**CLEAN_ENV, **SERVE_ALLOWS, "HBGW_STORE__ENCRYPTION_KEY": "bad", "HBGW_MLLP__PORT": "0",
           "HBGW_HTTP__PORT": "0"}
    result = subprocess.run([*CLI, "serve"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert result.returncode == 2 and "config error: store.encryption_key" in result.stderr
