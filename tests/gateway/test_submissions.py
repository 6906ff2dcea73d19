"""Documents become signed submissions for the right channel, which the emulator's validators accept."""
from __future__ import annotations

import base64
import json
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import mappings
from adapters.portal.emulator.validate import check_envelope, check_hub_message
from gateway.config import PortalSettings, SigningSettings
from gateway.signing import Signer, load_signer
from gateway.signing.sources import generate_self_signed
from gateway.submissions import build_submissions
from mappings.model import Document, FacilityInfo

FACILITY = FacilityInfo(name="Benh vien Demo", bhxh_code="40001", moh_facility_id="4000000000123")
NOW = datetime(2026, 11, 23, 8, 15, tzinfo=timezone.utc)


def _fake_build_tables(document: Document, facility: FacilityInfo) -> dict[str, bytes]:
    return {"XML1": f"<TONG_HOP><MA_LK>{document.document_id}</MA_LK></TONG_HOP>".encode()}


def _fake_build_envelope(tables: dict[str, bytes], facility: FacilityInfo, created_at: datetime) -> bytes:
    files = "".join(f"<FILEHOSO><LOAIHOSO>{kind}</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(table).decode()}"
                    "</NOIDUNGFILE></FILEHOSO>" for kind, table in tables.items())
    return (f"<GIAMDINHHS><THONGTINDONVI><MACSKCB>{facility.bhxh_code}</MACSKCB></THONGTINDONVI><THONGTINHOSO>"
            f"<NGAYLAP>{created_at:%Y%m%d%H%M}</NGAYLAP><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO><HOSO>{files}"
            "</HOSO></DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>").encode()


def _fake_build_checkup(document: Document, facility: FacilityInfo) -> dict[str, Any]:
    return {"ma_kham": document.document_id, "PHAN_LOAI_SK": 2}


@pytest.fixture(autouse=True)
def mapping_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins with the agreed signatures of mappings.xml130 and mappings.checkup1551."""
    xml130 = types.SimpleNamespace(build_tables=_fake_build_tables, build_envelope=_fake_build_envelope)
    checkup = types.SimpleNamespace(build_checkup=_fake_build_checkup)
    monkeypatch.setattr(mappings, "xml130", xml130, raising=False)
    monkeypatch.setattr(mappings, "checkup1551", checkup, raising=False)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    directory: Path = tmp_path_factory.mktemp("submissions")
    now = datetime.now(timezone.utc)
    certificate, key = generate_self_signed("Benh vien Demo", now - timedelta(days=1), now + timedelta(days=30))
    (directory / "c.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return load_signer(SigningSettings(source="pem", cert_file=directory / "c.pem", key_file=directory / "k.pem"))


def document(kind: str, document_id: str = "EP-42", version: int = 3) -> Document:
    return Document(document_id=document_id, version=version, kind=kind, patient_key="p", bundle={})  # type: ignore[arg-type]


def test_episode_becomes_one_signed_bhxh_envelope(signer: Signer) -> None:
    [submission] = build_submissions(document("episode"), FACILITY, signer, PortalSettings(), now=NOW)
    assert (submission.channel, submission.idempotency_key, submission.version) == ("bhxh_xml130", "EP-42:v3", 3)
    assert submission.content_type == "application/xml"
    checked = check_envelope(submission.body, signer.certificate_pem, submission.idempotency_key)
    assert checked == {"facility": "40001", "episodes": ["EP-42"], "files": ["XML1"]}


@pytest.mark.parametrize("kind", ["health_check", "immunization"])
def test_health_check_becomes_one_signed_hub_message(signer: Signer, kind: str) -> None:
    [submission] = build_submissions(document(kind, "KSK-7", 1), FACILITY, signer, PortalSettings(), now=NOW)
    assert (submission.channel, submission.idempotency_key) == ("moh_checkup", "KSK-7:v1")
    checked = check_hub_message(json.loads(submission.body), signer.certificate_pem)
    assert checked["header"] == {"sender_id": "4000000000123", "receiver_id": "BYT", "txn_type": "sync_checkup",
                                 "msg_id": "KSK-7:v1", "version": "1.0", "send_date": "2026-11-23T08:15:00Z"}
    assert checked["document"] == {"ma_kham": "KSK-7", "PHAN_LOAI_SK": 2}
    assert json.loads(submission.body)["signature"]


def test_disabled_channels_get_no_submission(signer: Signer) -> None:
    portal = PortalSettings.model_validate({"bhxh": {"enabled": False}, "hub": {"enabled": False}})
    assert build_submissions(document("episode"), FACILITY, signer, portal, now=NOW) == []
    assert build_submissions(document("health_check"), FACILITY, signer, portal, now=NOW) == []
