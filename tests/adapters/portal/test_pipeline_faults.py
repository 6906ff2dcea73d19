"""The lead's pipeline (real store, workers, channels, signatures) against the emulator under each fault:
every acknowledged message reaches the portal exactly once, with its receipt archived."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.portal.base import PortalChannel, Submission
from gateway.channels import build_submissions, open_channels
from gateway.config import (
    DEMO_SITE_MAPPINGS,
    BhxhChannelSettings,
    HubChannelSettings,
    PipelineSettings,
    PortalSettings,
    SiteMappingSettings,
)
from gateway.encryption import PayloadCipher
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline, mapping_executor
from gateway.signing import Signer
from gateway.store import Inbound, SqliteStore
from mappings.hl7v2 import map_message
from mappings.model import Document, FacilityInfo
from tests.adapters.portal.conftest import Portal
from tests.conftest import corpus_hl7

FACILITY = FacilityInfo(name="Benh vien Demo", bhxh_code="40001", moh_facility_id="4000000000123")
SITE = SiteMappingSettings(file=DEMO_SITE_MAPPINGS).as_mapping()
FAULTS: dict[str, dict[str, Any]] = {
    "server_errors": {"fail_rate": 0.4},
    "rate_limited": {"rate_limit_rate": 0.4, "retry_after": 0},
    "slow_answers": {"slow_rate": 0.3, "slow_seconds": 0.6},
    "dropped_connections": {"drop_rate": 0.4},
    "token_expiry": {"token_ttl": 0.05},
    "everything": {"fail_rate": 0.15, "rate_limit_rate": 0.1, "retry_after": 0, "slow_rate": 0.1,
                   "slow_seconds": 0.6, "drop_rate": 0.15},
}


def hl7_messages(count: int) -> list[bytes]:
    """Distinct episodes and health checks made from the corpus (new visit numbers and control ids)."""
    admit, check = corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_health_check.hl7")
    messages = []
    for number in range(count):
        messages.append(admit.replace("VV26000456", f"VV2690{number:04d}").replace("MSG000123", f"A{number:05d}"))
        messages.append(check.replace("KSK26000042", f"KSK2690{number:04d}").replace("|P|2.5", f"{number}|P|2.5", 1))
    return [message.encode("utf-8") for message in messages]


def expected_keys(messages: list[bytes]) -> list[str]:
    return sorted(f"{fragment.document_id}:v1" for message in messages
                  for fragment in map_message(message.decode("utf-8")).fragments)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"k" * 32), lease_seconds=5).open()
    yield opened
    await opened.close()


@pytest.fixture
async def channels(portal: Portal) -> AsyncIterator[dict[str, PortalChannel]]:
    common: dict[str, Any] = {"base_url": portal.base_url, "username": "facility", "password": "s3cret-pass",
                              "timeout_seconds": 0.4}
    made = open_channels(PortalSettings(bhxh=BhxhChannelSettings(**common), hub=HubChannelSettings(**common)),
                         Metrics())
    yield made
    for channel in made.values():
        await channel.close()


EVERY_VERSION = PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version"))  # one file per admission


@pytest.fixture
def make_pipeline(store: SqliteStore, channels: dict[str, PortalChannel], signer: Signer) -> Callable[[], Pipeline]:
    settings = PipelineSettings(workers=4, mapping_processes=0, poll_interval_seconds=0.02,
                                backoff_base_seconds=0.01, backoff_max_seconds=0.05)

    def build(document: Document, previous: Document | None) -> list[Submission]:
        return build_submissions(document, FACILITY, signer, EVERY_VERSION, now=datetime.now(UTC),
                                 previous=previous, site=SITE)

    return lambda: Pipeline(store, Metrics(), settings, build, channels, lambda: mapping_executor(0))


async def acknowledge(store: SqliteStore, messages: list[bytes]) -> None:
    for number, payload in enumerate(messages):
        await store.store_inbound(Inbound("mllp", "HIS|BV", f"C{number}", "ADT^A01", f"cid{number}", payload, b"AA"))


async def wait_delivered(store: SqliteStore, count: int) -> None:
    """Bounded wait until `count` submissions are delivered; a dead letter fails at once."""
    for _ in range(3000):
        depths = await store.queue_depths()
        assert depths.get(("outbox", "dead"), 0) == 0 and depths.get(("inbox", "dead"), 0) == 0, depths
        if depths.get(("outbox", "delivered"), 0) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not all delivered: {await store.queue_depths()}")


def archived_receipts(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT transaction_id FROM receipts")]


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_every_acknowledged_message_reaches_the_portal_exactly_once(
        fault: str, portal: Portal, store: SqliteStore, make_pipeline: Callable[[], Pipeline], tmp_path: Path) -> None:
    messages = hl7_messages(4)
    await portal.faults(**FAULTS[fault])
    await acknowledge(store, messages)
    pipeline = make_pipeline()
    await pipeline.start()
    try:
        await wait_delivered(store, len(messages))
    finally:
        await pipeline.stop()
    stats = await portal.stats()
    assert sorted(stats["accepted_keys"]) == expected_keys(messages)
    assert stats["rejected"] == 0 and stats["signature_failures"] == 0
    receipts = archived_receipts(tmp_path / "gw.db")
    assert len(receipts) == len(set(receipts)) == len(messages)


async def test_a_restart_in_the_middle_of_an_outage_loses_and_repeats_nothing(
        portal: Portal, store: SqliteStore, make_pipeline: Callable[[], Pipeline]) -> None:
    messages = hl7_messages(5)
    await portal.faults(drop_rate=0.5, fail_rate=0.2)
    await acknowledge(store, messages)
    first = make_pipeline()
    await first.start()
    await wait_delivered(store, 2)
    await first.stop()
    await portal.faults(expire_tokens=True)
    second = make_pipeline()
    await second.start()
    try:
        await wait_delivered(store, len(messages))
    finally:
        await second.stop()
    accepted = (await portal.stats())["accepted_keys"]
    assert len(accepted) == len(set(accepted))
    assert sorted(accepted) == expected_keys(messages)
