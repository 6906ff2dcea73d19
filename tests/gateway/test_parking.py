"""An episode the site mappings cannot code yet: stored and acknowledged, parked (not sent), rebuilt once mapped."""
from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.portal.base import Submission
from gateway.channels import build_submissions
from gateway.config import (
    BhxhChannelSettings,
    PortalSettings,
)
from gateway.encryption import PayloadCipher
from gateway.metrics import Metrics
from gateway.parking import rebuild_parked
from gateway.signing import Signer
from gateway.store import Inbound, SqliteStore, Store
from mappings.model import Document
from tests.conftest import corpus_hl7
from tests.demo_site import FACILITY, SITE
from tests.gateway.test_pipeline import SETTINGS, ScriptedChannel, corpus
from tests.mappings.claim_samples import inpatient_messages
from tests.store_backends import StoreBackend

NO_WARD = {**SITE, "wards": {}}


@pytest.fixture
async def store(backend: StoreBackend) -> AsyncIterator[Store]:
    opened = await backend.open(lease_seconds=30)
    yield opened
    await opened.close()


EVERY_VERSION = PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version", checkin_enabled=False))


def builder(signer: Signer, site: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    def build(document: Document, previous: Document | None) -> list[Submission]:
        return build_submissions(document, FACILITY, signer, EVERY_VERSION, site=site, previous=previous)
    return build


async def map_all(store: Store, signer: Signer, site: Mapping[str, Any], messages: list[str],
                  channel: ScriptedChannel | None = None) -> Metrics:
    """Acknowledge the messages and run the pipeline until each is mapped and what it queued is delivered."""
    from gateway.pipeline import Pipeline, mapping_executor

    metrics = Metrics()
    pipeline = Pipeline(store, metrics, SETTINGS, builder(signer, site),
                        {"bhxh_xml130": channel or ScriptedChannel([])}, lambda: mapping_executor(0))
    await pipeline.start()
    try:
        for text in messages:
            await store.store_inbound(Inbound("mllp", "HIS|BV", uuid.uuid4().hex, "ADT^A01", "cid", text.encode(),
                                              b"AA"))
        for _ in range(400):
            depths = await store.queue_depths()
            if not any(depths.get(key) for key in (("inbox", "received"), ("outbox", "pending"),
                                                   ("outbox", "in_flight"))):
                break
            await asyncio.sleep(0.05)
    finally:
        await pipeline.stop()
    return metrics


async def outbox(store: Store) -> list[tuple[str, int]]:
    """The pending submissions (claimed to look at them: the test runs no submission stage)."""
    return [(c.submission.document_id, c.submission.version) for c in await store.claim_submissions(100)]


async def test_an_unmapped_ward_parks_the_episode_and_a_rebuild_sends_it(store: Store, signer: Signer) -> None:
    metrics = await map_all(store, signer, NO_WARD, corpus("adt_a01_admit.hl7"))
    assert (await store.queue_depths()).get(("inbox", "mapped")) == 1  # acknowledged and kept
    assert await outbox(store) == []
    [waiting] = await store.parked()
    assert (waiting.document_id, waiting.version, waiting.codes) == ("4000000000123_VV26000456", 1, ("ward:NOI-TM",))
    assert metrics.documents_parked.labels("ward")._value.get() == 1

    still = await rebuild_parked(store, builder(signer, NO_WARD))
    assert (still.queued, [w.codes for w in still.waiting]) == ([], [("ward:NOI-TM",)])
    done = await rebuild_parked(store, builder(signer, SITE), metrics)
    assert done.queued == ["4000000000123_VV26000456"] and await store.parked() == []
    assert await outbox(store) == [("4000000000123_VV26000456", 1)]
    assert metrics.documents_waiting._value.get() == 0


async def test_a_later_complete_version_ends_the_wait(store: Store, signer: Signer) -> None:
    await map_all(store, signer, NO_WARD, corpus("adt_a01_admit.hl7"))
    assert len(await store.parked()) == 1
    portal = ScriptedChannel([])
    await map_all(store, signer, SITE, [corpus_hl7("oru_r01_lab.hl7")], portal)  # the ward was mapped meanwhile
    assert await store.parked() == []
    assert portal.calls == ["4000000000123_VV26000456:v2"]


async def test_the_parked_codes_follow_the_latest_version(store: Store, signer: Signer) -> None:
    stay = [message for _, message in inpatient_messages()]
    await map_all(store, signer, {**SITE, "items": {}}, stay[:2])
    [waiting] = await store.parked()
    assert waiting.version == 2 and set(waiting.codes) == {"item:AMLO5", "item:ATOR20"}


def test_the_cli_lists_and_rebuilds_parked_episodes(tmp_path: Path, signer: Signer) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    settings_file, database, site_file = tmp_path / "gateway.toml", tmp_path / "gw.db", tmp_path / "site.toml"
    site_file.write_text("[patient_categories]\n\"\" = \"1.1\"\n", encoding="utf-8")
    settings_file.write_text(f'[store]\npath = "{database}"\n[signing]\nsource = "dev"\ndev_dir = "{tmp_path / "dev"}"\n'
                             f'[site_mappings]\nfile = "{site_file}"\n', encoding="utf-8")

    async def park() -> None:
        opened = await SqliteStore(database, PayloadCipher(b"k" * 32)).open()
        try:
            await map_all(opened, signer, {"patient_categories": {"": "1.1"}}, corpus("adt_a01_admit.hl7"))
        finally:
            await opened.close()
    asyncio.run(park())
    env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
    env["HBGW_STORE__ENCRYPTION_KEY"] = base64.b64encode(b"k" * 32).decode()
    cli = [str(Path(sys.executable).parent / "healthbook-gateway")]

    def run(*args: str) -> Any:
        done = subprocess.run([*cli, *args, "--config", str(settings_file)], capture_output=True, text=True, check=False,
                              env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    assert run("parked", "list")[0]["waits_for"] == ["ward:NOI-TM"]
    site_file.write_text("[patient_categories]\n\"\" = \"1.1\"\n[wards]\n\"NOI-TM\" = \"K02\"\n", encoding="utf-8")
    assert run("parked", "rebuild")["queued"] == ["4000000000123_VV26000456"]
    assert run("parked", "list") == []


def test_a_site_mapping_that_cannot_be_right_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_settings

    settings_file = tmp_path / "gateway.toml"
    settings_file.write_text('[site_mappings.wards]\n"NOI-TM" = "Khoa Nội"\n[site_mappings.items.KB]\ncode = "1"\n'
                             'group = "99"\n[site_mappings.patient_categories]\nBH = "BHYT"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_settings(settings_file, environ={})
    assert [problem.split(":")[0] for problem in error.value.problems] == [
        "site_mappings.wards", "site_mappings.items", "site_mappings.patient_categories"]
