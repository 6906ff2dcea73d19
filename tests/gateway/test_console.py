"""The console's accounts, settings, login and TLS, without a browser (tests/e2e/test_console_browser.py
drives the pages in chromium)."""
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, ConsoleSettings, load_settings
from gateway.console.accounts import hash_password, load_accounts, verify_password
from gateway.console.app import redact
from tests.tls_certs import Pki, make_pki

PASSWORD = "a-long-password-1"


def test_a_password_matches_only_its_own_hash() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "x", stored)
    assert hash_password(PASSWORD) != stored, "salted"
    assert not verify_password(PASSWORD, "scrypt$broken")


def test_an_enabled_console_needs_an_account_and_a_hash_not_a_password() -> None:
    with pytest.raises(ConfigError, match="console: .*needs accounts"):
        load_settings(None, {"HBGW_CONSOLE__ENABLED": "true"})
    accounts = json.dumps([{"name": "ops", "password_hash": PASSWORD}])
    with pytest.raises(ConfigError, match="password_hash: .*never the password itself") as caught:
        load_settings(None, {"HBGW_CONSOLE__ENABLED": "true", "HBGW_CONSOLE__ACCOUNTS": accounts})
    assert PASSWORD not in str(caught.value)


def test_accounts_come_from_a_file_and_a_name_is_used_once(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(f'[[accounts]]\nname = "lan"\nrole = "operator"\npassword_hash = "{hash_password(PASSWORD)}"\n')
    accounts = load_accounts(ConsoleSettings(enabled=True, accounts_file=path), tmp_path)
    assert accounts["lan"].may_act
    twice = ConsoleSettings.model_validate({"enabled": True, "accounts_file": path, "accounts": [
        {"name": "lan", "password_hash": hash_password(PASSWORD)}]})
    with pytest.raises(ConfigError, match="appears twice"):
        load_accounts(twice, tmp_path)


def test_demo_account_password_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_accounts(ConsoleSettings(enabled=True, demo_account=True), tmp_path)["demo"]
    again = load_accounts(ConsoleSettings(enabled=True, demo_account=True), tmp_path)["demo"]
    password = (tmp_path / "console-demo-password").read_text().strip()
    assert verify_password(password, first.password_hash) and verify_password(password, again.password_hash)
    assert (tmp_path / "console-demo-password").stat().st_mode & 0o077 == 0


def test_id_like_numbers_are_masked_and_timestamps_kept() -> None:
    assert redact("CCCD 040085012345 at 20260312083015") == "CCCD [redacted] at 20260312083015"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[Gateway]:
    """The gateway with only its console, over TLS."""
    settings = load_settings(None, {
        "HBGW_MLLP__ENABLED": "false", "HBGW_HTTP__ENABLED": "false", "HBGW_PIPELINE__MAPPING_PROCESSES": "0",
        "HBGW_STORE__PATH": str(tmp_path / "var" / "gateway.db"), "HBGW_SIGNING__DEV_DIR": str(tmp_path / "cert"),
        "HBGW_CONSOLE__ENABLED": "true", "HBGW_CONSOLE__PORT": "0", "HBGW_CONSOLE__TLS__ENABLED": "true",
        "HBGW_CONSOLE__TLS__CERT_FILE": str(pki.server_cert), "HBGW_CONSOLE__TLS__KEY_FILE": str(pki.server_key),
        "HBGW_CONSOLE__ACCOUNTS": json.dumps([{"name": "ops", "role": "operator",
                                               "password_hash": hash_password(PASSWORD)}])})
    gateway = Gateway(settings)
    await gateway.start()
    yield gateway
    await gateway.stop()


async def login(http: aiohttp.ClientSession, base: str, password: str) -> aiohttp.ClientResponse:
    page = await (await http.get(f"{base}/login")).text()
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    return await http.post(f"{base}/login", data={"name": "ops", "password": password, "csrf": token.group(1)},
                           allow_redirects=False)


async def test_the_console_speaks_tls_with_secure_cookies_and_locks_out_guessing(gateway: Gateway, pki: Pki) -> None:
    base = f"https://127.0.0.1:{gateway.console_port}"
    connector = aiohttp.TCPConnector(ssl=pki.client_context(with_certificate=False))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        first = await http.get(f"{base}/dead", allow_redirects=False)
        assert first.status == 303 and first.headers["Location"] == "/login"
        forged = await http.post(f"{base}/login", data={"name": "ops", "password": PASSWORD, "csrf": "x"})
        assert forged.status == 403
        good = await login(http, base, PASSWORD)
        assert good.status == 303
        cookie = good.cookies["hbgw_console"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        page = await http.get(f"{base}/dead")
        assert page.status == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(False)),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for _ in range(5):
            assert (await login(http, base, "wrong")).status == 401
        assert (await login(http, base, PASSWORD)).status == 401, "locked out after five failures"
