"""Real emulator on a free 127.0.0.1 port, real channel clients, real facility signatures."""
from __future__ import annotations

import base64
import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from adapters.portal.base import PortalChannel, PortalError, Receipt, Submission, TransientPortalError
from adapters.portal.emulator import EmulatorConfig, Faults, create_emulator_app
from adapters.portal.emulator.validate import checkin_layout
from gateway.channels import CHANNELS, ChannelSpec, open_channel, submission_for
from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.hub_message import hub_header, hub_message, msg_id, sign_form
from gateway.metrics import Metrics
from gateway.signing import Signer
from mappings.checkup.build import FormOptions, build_form
from mappings.document import assemble
from mappings.hl7v2 import map_message
from mappings.model import Document, FacilityInfo
from tests.checkup_samples import hl7

FACILITY_ID = "4000000000123"


def spec(name: str) -> ChannelSpec:
    """The registered channel of that name."""
    return next(channel for channel in CHANNELS if channel.name == name)


def xml1_table(ma_lk: str) -> bytes:
    return f"<TONG_HOP><MA_LK>{ma_lk}</MA_LK><MA_BN>BN0001</MA_BN><MA_LOAI_KCB>01</MA_LOAI_KCB></TONG_HOP>".encode()


def unsigned_envelope(ma_lk: str, file_type: str = "XML1", facility: str = "40001") -> bytes:
    """A minimal GIAMDINHHS envelope ending with an empty CHUKYDONVI, as mappings.xml130 builds it."""
    table = base64.b64encode(xml1_table(ma_lk)).decode("ascii")
    return (
        "<?xml version='1.0' encoding='utf-8'?><GIAMDINHHS><THONGTINDONVI>"
        f"<MACSKCB>{facility}</MACSKCB></THONGTINDONVI>"
        "<THONGTINHOSO><NGAYLAP>20261123</NGAYLAP><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO><HOSO><FILEHOSO>"
        f"<LOAIHOSO>{file_type}</LOAIHOSO><NOIDUNGFILE>{table}</NOIDUNGFILE></FILEHOSO></HOSO></DANHSACHHOSO>"
        "</THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>"
    ).encode()


def unsigned_checkin(ma_lk: str, facility: str = "40001") -> bytes:
    """A minimal XML0 check-in with every field of the layout, ending with an empty CHUKYDONVI."""
    values = {"MA_LK": ma_lk, "STT": "1", "MA_BN": "BN0001", "NGAY_VAO": "202611230800", "MA_LOAI_KCB": "01",
              "MA_CSKCB": facility, "MA_DICH_VU": "02.1896", "NGAY_YL": "202611230805"}
    row = "".join(f"<{name}>{values.get(name, '')}</{name}>" for name in checkin_layout()["fields"])
    return ("<?xml version='1.0' encoding='utf-8'?><CHI_TIEU_TRANG_THAI_KCB><DSACH_TRANG_THAI_KCB>"
            f"<TRANG_THAI_KCB>{row}</TRANG_THAI_KCB></DSACH_TRANG_THAI_KCB><CHUKYDONVI/>"
            "</CHI_TIEU_TRANG_THAI_KCB>").encode()


@pytest.fixture
def make_bhxh(signer: Signer) -> Callable[..., Submission]:
    def make(document_id: str, version: int = 1, file_type: str = "XML1", facility: str = "40001") -> Submission:
        envelope = unsigned_envelope(document_id, file_type, facility)
        return submission_for(spec("bhxh_xml130"), document_id, version, signer.sign_xml_envelope(envelope),
                              facility=FacilityInfo("Demo", facility, FACILITY_ID))
    return make


@functools.cache
def _checkup_document(visit: str) -> Document:
    """The adult sample health check (tests/checkup_samples.py) under its own visit number."""
    return assemble(None, map_message(hl7("adult", visit)).fragments[0])


def signed_form(document_id: str, signer: Signer) -> tuple[Document, bytes]:
    """A sample health check as its facility-signed TREN_18 form."""
    document = _checkup_document(document_id)
    form = build_form(document, FacilityInfo("Demo", "40001", FACILITY_ID), FormOptions("14", "9"))
    assert not form.issues, form.issues
    return document, sign_form(form.xml, form.slots, signer, {})


@pytest.fixture
def make_checkin(signer: Signer) -> Callable[..., Submission]:
    def make(document_id: str, facility: str = "40001") -> Submission:
        signed = signer.sign_xml_envelope(unsigned_checkin(document_id, facility))
        return submission_for(spec("bhxh_checkin"), document_id, 1, signed,
                              facility=FacilityInfo("Demo", facility, FACILITY_ID))
    return make


@pytest.fixture
def make_hub(signer: Signer) -> Callable[..., Submission]:
    """A signed hub message carrying a real signed form; header changes are made before the checksum."""
    def make(document_id: str, version: int = 1, **header_changes: Any) -> Submission:
        document, xml = signed_form(document_id, signer)
        document = dataclasses.replace(document, version=version)
        settings = HubChannelSettings()
        header = hub_header(settings, FACILITY_ID, msg_id(FACILITY_ID, document),
                            datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        header.update(header_changes)
        return submission_for(spec("moh_checkup"), document_id, version, hub_message(header, xml, signer, settings))
    return make


class Portal:
    """A running emulator with handles to change its faults and read its stats."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.base_url = str(server.make_url("")).rstrip("/")

    async def faults(self, **changes: Any) -> dict[str, Any]:
        async with self.session.post(f"{self.base_url}/_emulator/faults", json=changes) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/_emulator/stats") as response:
            return await response.json()


@pytest.fixture
def emulator_config(signer: Signer) -> EmulatorConfig:
    return EmulatorConfig(cert_pem=signer.certificate_pem, username="facility", password="s3cret-pass",
                          faults=Faults(), seed=1234)


@pytest.fixture
async def portal(emulator_config: EmulatorConfig) -> AsyncIterator[Portal]:
    server = TestServer(create_emulator_app(emulator_config), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Portal(server, session)
    await server.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def bhxh(portal: Portal, metrics: Metrics) -> AsyncIterator[PortalChannel]:
    """The BHXH client wired to the gateway's metrics, as the gateway opens it."""
    channel = open_channel(spec("bhxh_xml130"), BhxhChannelSettings(
        base_url=portal.base_url, username="facility", password="s3cret-pass", timeout_seconds=2.0), metrics)
    yield channel
    await channel.close()


@pytest.fixture
async def hub(portal: Portal, metrics: Metrics) -> AsyncIterator[PortalChannel]:
    """The hub client wired to the gateway's metrics, as the gateway opens it."""
    channel = open_channel(spec("moh_checkup"), HubChannelSettings(
        base_url=portal.base_url, username="facility", password="s3cret-pass", timeout_seconds=2.0), metrics)
    yield channel
    await channel.close()


async def deliver_like_the_pipeline(channel: Any, submissions: list[Submission],
                                    max_rounds: int = 200) -> dict[str, Receipt]:
    """Retry transient failures (without sleeping out Retry-After) until every submission has a receipt."""
    receipts: dict[str, Receipt] = {}
    pending = list(submissions)
    for _ in range(max_rounds):
        if not pending:
            return receipts
        outcomes: list[Receipt | PortalError] = await channel.submit_many(pending)
        still: list[Submission] = []
        for submission, outcome in zip(pending, outcomes):
            if isinstance(outcome, Receipt):
                receipts[submission.idempotency_key] = outcome
            elif isinstance(outcome, TransientPortalError):
                still.append(submission)
            else:
                raise AssertionError(f"{submission.idempotency_key} refused for good: {outcome.reason}")  # noqa: TRY004
        pending = still
    raise AssertionError(f"{len(pending)} submissions still pending after {max_rounds} rounds")


def keys(stats: dict[str, Any]) -> list[str]:
    return sorted(stats["accepted_keys"])


def body_json(submission: Submission) -> dict[str, Any]:
    return json.loads(submission.body)
