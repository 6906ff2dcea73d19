"""Stand-ins with the agreed signatures of mappings.xml130 and mappings.checkup1551 until those land."""
from __future__ import annotations

import base64
import types
from datetime import datetime
from typing import Any

import pytest

import mappings
from mappings.model import Document, FacilityInfo


def build_tables(document: Document, facility: FacilityInfo) -> dict[str, bytes]:
    return {"XML1": f"<TONG_HOP><MA_LK>{document.document_id}</MA_LK></TONG_HOP>".encode()}


def build_envelope(tables: dict[str, bytes], facility: FacilityInfo, created_at: datetime) -> bytes:
    files = "".join(f"<FILEHOSO><LOAIHOSO>{kind}</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(table).decode()}"
                    "</NOIDUNGFILE></FILEHOSO>" for kind, table in tables.items())
    return (f"<GIAMDINHHS><THONGTINDONVI><MACSKCB>{facility.bhxh_code}</MACSKCB></THONGTINDONVI><THONGTINHOSO>"
            f"<NGAYLAP>{created_at:%Y%m%d%H%M}</NGAYLAP><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO><HOSO>{files}"
            "</HOSO></DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>").encode()


def build_checkup(document: Document, facility: FacilityInfo) -> dict[str, Any]:
    return {"ma_kham": document.document_id, "PHAN_LOAI_SK": 2}


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the stand-ins where gateway.submissions imports the real modules from."""
    monkeypatch.setattr(mappings, "xml130", types.SimpleNamespace(build_tables=build_tables,
                                                                  build_envelope=build_envelope), raising=False)
    monkeypatch.setattr(mappings, "checkup1551", types.SimpleNamespace(build_checkup=build_checkup), raising=False)
