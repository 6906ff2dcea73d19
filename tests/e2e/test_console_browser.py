"""The operator console in a real browser (Debian's chromium driven by Playwright) against a real gateway.

The store is seeded with dead letters (a refused message, refused submissions), then the gateway starts on
it and receives a corpus message over MLLP, which it delivers to its emulator. Screenshots are saved under
the test's temporary folder (the path is printed) for a person to look at.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.portal.base import Submission
from gateway.console.accounts import hash_password
from gateway.encryption import PayloadCipher
from gateway.store import Inbound, SqliteStore
from mappings.model import Document
from tests.conftest import CORPUS
from tests.e2e.harness import GatewayProcess, wait_until
from tests.gateway.intake_harness import hl7

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path(os.environ.get("HBGW_TEST_CHROMIUM", "/usr/bin/chromium"))
KEY = b"k" * 32
PASSWORDS = {"olga": "operator-password-1", "victor": "viewer-password-1"}
SEEDED_NAME = "NGUYEN^AN"


async def seed(path: Path) -> None:
    """inbox:1 dead (refused by the mapping), inbox:2 mapped into D1 v1 and D2 v1 (outbox:1, outbox:2 dead)."""
    store = await SqliteStore(path, PayloadCipher(KEY)).open()
    ids = [(await store.store_inbound(Inbound("mllp", "HIS_OLD|BV", f"SEED{n}", "ADT^A01", "cid",
                                              hl7(f"SEED{n}").encode(), b"MSH|^~\\&|HBGW\rMSA|AA|SEED\r"))).message_id
           for n in (1, 2)]
    await store.dead_letter_message(ids[0], "PID-3 cccd-birth-mismatch: CCCD 040085012345 does not agree with PID-7")
    documents = [Document(d, 1, "episode", "patient-key", {"resourceType": "Bundle"}) for d in ("D1", "D2")]
    await store.commit_mapping(ids[1], documents, [
        Submission("bhxh_xml130", f"{d}:v1", d, 1, b"<GIAMDINHHS/>", "application/xml") for d in ("D1", "D2")])
    for outbox_id in (1, 2):
        await store.dead_letter_submission(outbox_id, "maKetQua 401: MA_LK already closed")
    await store.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("console-gateway")
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop in the main thread
        thread.submit(asyncio.run, seed(workdir / "var" / "gateway.db")).result()
    accounts = [{"name": "olga", "role": "operator", "password_hash": hash_password(PASSWORDS["olga"])},
                {"name": "victor", "role": "viewer", "password_hash": hash_password(PASSWORDS["victor"])}]
    gateway = GatewayProcess(workdir, extra_env={
        "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode(),
        "HBGW_CONSOLE__ACCOUNTS": json.dumps(accounts), "HBGW_CONSOLE__DEMO_ACCOUNT": "false"}).start()
    try:
        admit = workdir / "admit.hl7"
        admit.write_bytes((CORPUS / "hl7v2" / "adt_a01_admit.hl7").read_bytes())
        assert "MSA|AA" in gateway.mllp_send(admit)
        wait_until(lambda: gateway.work_left() == 0, 60, what="the corpus message delivered")
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"no chromium at {CHROMIUM}: run `make system-deps` (Debian package chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console-screenshots")
    print(f"console screenshots in {folder}")
    return folder


def logged_in(browser, gateway: GatewayProcess, name: str):
    """A fresh browser context (its own cookies) logged in as `name`."""
    context = browser.new_context(base_url=gateway.console_url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return page


def test_login_refuses_a_wrong_password_then_shows_the_dashboard(browser, gateway, screenshots) -> None:
    context = browser.new_context(base_url=gateway.console_url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto("/messages")
    assert page.url.endswith("/login"), "a page needs a login first"
    page.fill("input[name=name]", "olga")
    page.fill("input[name=password]", "not her password")
    page.click("button[type=submit]")
    assert "Wrong name or password" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "login-refused.png"))
    page.fill("input[name=name]", "olga")
    page.fill("input[name=password]", PASSWORDS["olga"])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    feeds = page.inner_text("main")
    assert "HIS_BVDK|BVDK_NGHEAN^4000000000123^L" in feeds and "bhxh_xml130" in feeds
    page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
    cookie = next(c for c in context.cookies() if c["name"] == "hbgw_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    context.close()


def test_the_browser_finds_a_message_by_control_id_with_its_ack_documents_and_receipt(
        browser, gateway, screenshots) -> None:
    page = logged_in(browser, gateway, "victor")
    page.click("nav >> text=Messages")
    page.fill("input[name=control_id]", "MSG000123")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.select tbody tr")
    assert rows.count() == 1 and "mapped" in rows.first.inner_text()
    rows.first.locator("a").first.click()
    main = page.inner_text("main")
    assert "MSA|AA|MSG000123" in main, "the ACK the sender got"
    assert "delivered" in main and "No receipt yet" not in main, "a delivered submission and its receipt"
    assert "040085012345" not in main and "NGUYỄN" not in main, "no personal data without show content"
    page.screenshot(path=str(screenshots / "message.png"), full_page=True)
    page.context.close()


def test_show_content_is_for_operators_and_is_audited(browser, gateway, screenshots) -> None:
    viewer = logged_in(browser, gateway, "victor")
    viewer.goto("/messages/1")
    assert viewer.locator("text=Show content").count() == 0 and SEEDED_NAME not in viewer.content()
    viewer.context.close()
    page = logged_in(browser, gateway, "olga")
    page.goto("/messages/1")
    assert SEEDED_NAME not in page.inner_text("main")
    assert "CCCD [redacted] does not agree" in page.inner_text("main"), "id-like numbers masked in reasons"
    page.click("text=Show content")
    assert SEEDED_NAME in page.inner_text("pre.content")
    page.screenshot(path=str(screenshots / "content.png"))
    page.goto("/audit?action=show-payload")
    assert "olga@console" in page.inner_text("table") and "inbox:1" in page.inner_text("table")
    csv = page.request.get("/audit.csv?action=show-payload")
    assert csv.ok and csv.text().splitlines()[0] == "at,operator,action,item,detail"
    assert "olga@console,show-payload,inbox:1" in csv.text()
    page.context.close()


def test_bulk_retry_of_selected_dead_letters(browser, gateway, screenshots) -> None:
    page = logged_in(browser, gateway, "olga")
    page.goto("/dead")
    assert page.locator("table.select tbody tr").count() == 3
    page.screenshot(path=str(screenshots / "dead-letters.png"), full_page=True)
    page.check("input[value='inbox:1']")
    page.check("input[value='outbox:2']")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[value=retry]")
    assert "Retry: 2 of 2 done" in page.inner_text("h1")
    page.screenshot(path=str(screenshots / "retried.png"))
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:
        audit = db.execute("SELECT operator, action, item FROM operator_actions WHERE action = 'retry'"
                           " ORDER BY item").fetchall()
    assert audit == [("olga@console", "retry", "inbox:1"), ("olga@console", "retry", "outbox:2")]
    page.context.close()


def test_retry_now_from_the_channels_page(browser, gateway, screenshots) -> None:
    page = logged_in(browser, gateway, "olga")
    page.goto("/channels")
    page.locator("tr", has_text="bhxh_xml130").locator("button", has_text="Retry now").click()
    assert "bhxh_xml130:" in page.inner_text(".notice") and "due now" in page.inner_text(".notice")
    page.screenshot(path=str(screenshots / "channels.png"))
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(browser, gateway) -> None:
    page = logged_in(browser, gateway, "olga")
    answer = page.request.post("/channels/bhxh_xml130/retry-now", form={"csrf": "forged"})
    assert answer.status == 403 and "CSRF" in answer.text()
    bare = page.request.post("/dead", form={"action": "discard", "ref": "outbox:1"})
    assert bare.status == 403
    page.goto("/dead")
    assert "outbox:1" in page.inner_text("table"), "nothing was discarded"
    page.context.close()


def test_a_viewer_may_look_but_not_act(browser, gateway, screenshots) -> None:
    page = logged_in(browser, gateway, "victor")
    page.goto("/channels")
    assert page.locator("button", has_text="Retry now").first.is_disabled()
    page.screenshot(path=str(screenshots / "channels-viewer.png"))
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post("/dead", form={"csrf": token, "action": "discard", "ref": "outbox:1"})
    assert answer.status == 403 and "role viewer" in answer.text()
    content = page.request.post("/messages/1/content", form={"csrf": token})
    assert content.status == 403 and SEEDED_NAME not in content.text()
    page.context.close()
