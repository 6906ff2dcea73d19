"""The BHXH wire as the references show it: the client's exact requests, the emulator refusing old shapes,
result codes classified, several facilities with their own accounts; all over real sockets."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.portal.base import PermanentPortalError, PortalChannel, Receipt, Submission, TransientPortalError
from adapters.portal.bhxh import BhxhAccount, BhxhChannel, filed_as, read_signed_document
from adapters.portal.bhxh_wire import token_lifetime
from adapters.portal.emulator import EmulatorConfig, Faults, create_emulator_app
from adapters.portal.emulator.state import BhxhEmulatorAccount
from gateway.config import BhxhChannelSettings
from gateway.signing import Signer
from tests.adapters.portal.conftest import Portal, unsigned_checkin

PASSWORD_MD5_UPPER = hashlib.md5(b"s3cret-pass").hexdigest().upper()


class RecordingPortal:
    """A stand-in portal that keeps every request exactly as it arrived and answers like BHXH."""

    def __init__(self, submit_code: str = "200") -> None:
        self.requests: list[dict[str, Any]] = []
        self.submit_code = submit_code

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "content_type": request.content_type,
                              "headers": dict(request.headers), "form": dict(await request.post())})
        if request.path == "/api/token/take":
            return web.json_response({"maKetQua": "200", "APIKey": {
                "access_token": "AT-1", "id_token": "ID-1", "token_type": "bearer", "username": "facility",
                "expires_in": "2099-01-01T00:00:00.0000000Z"}})
        return web.json_response({"maKetQua": self.submit_code, "maGiaoDich": "GD0001",
                                  "thoiGianTiepNhan": "20261123080000", "thongDiep": "Tiếp nhận thành công"})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[RecordingPortal, str]]:
    recording = RecordingPortal()
    app = web.Application()
    app.router.add_post("/{path:.*}", recording.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield recording, str(server.make_url("")).rstrip("/")
    await server.close()


def channel_to(base_url: str, accounts: tuple[BhxhAccount, ...] = ()) -> BhxhChannel:
    return BhxhChannel(BhxhChannelSettings(base_url=base_url, username="facility", password="s3cret-pass",
                                           timeout_seconds=2.0), name="bhxh_xml130", accounts=accounts)


async def submit_once(base_url: str, recording: RecordingPortal, submission: Submission,
                      accounts: tuple[BhxhAccount, ...] = ()) -> tuple[Receipt, dict[str, Any]]:
    """One submission through a fresh channel: the receipt, and the request that carried it (after the login)."""
    channel = channel_to(base_url, accounts)
    try:
        receipt = await channel.submit(submission)
    finally:
        await channel.close()
    return receipt, recording.requests[1]


async def test_the_client_logs_in_with_a_form_and_the_upper_case_md5(recorder: tuple[RecordingPortal, str],
                                                                     make_bhxh: Callable[..., Submission]) -> None:
    recording, base_url = recorder
    channel = channel_to(base_url)
    try:
        await channel.submit(make_bhxh("EP-W1"))
    finally:
        await channel.close()
    login = recording.requests[0]
    assert login["path"] == "/api/token/take"
    assert login["content_type"] == "application/x-www-form-urlencoded"
    assert login["form"] == {"username": "facility", "password": PASSWORD_MD5_UPPER}


async def test_episode_files_go_as_the_portal_form_with_the_session_headers(
        recorder: tuple[RecordingPortal, str], make_bhxh: Callable[..., Submission]) -> None:
    recording, base_url = recorder
    submission = make_bhxh("EP-W2")
    receipt, sent = await submit_once(base_url, recording, submission)
    assert sent["path"] == "/api/qd130/guiHoSoXmlQD3176"
    assert sent["content_type"] == "application/x-www-form-urlencoded"
    assert sent["form"] == {"username": "facility", "loaiHoSo": "130", "maTinh": "40", "maCSKCB": "40001",
                            "fileHSBase64": base64.b64encode(submission.body).decode("ascii")}
    assert (sent["headers"]["accessToken"], sent["headers"]["tokenId"]) == ("AT-1", "ID-1")
    assert sent["headers"]["passwordHash"] == PASSWORD_MD5_UPPER
    assert (receipt.transaction_id, receipt.received_at, receipt.result_code) == ("GD0001", "20261123080000", "200")


async def test_a_check_in_goes_to_its_own_path_with_loai_ho_so_0_and_the_facility_province(
        recorder: tuple[RecordingPortal, str], make_checkin: Callable[..., Submission]) -> None:
    recording, base_url = recorder
    _, sent = await submit_once(base_url, recording, make_checkin("EP-W3"),
                                (BhxhAccount("40001", "facility", "s3cret-pass", province_code="01"),))
    assert sent["path"] == "/api/qd130/checkInKcbQd3176"
    assert (sent["form"]["loaiHoSo"], sent["form"]["maTinh"], sent["form"]["maCSKCB"]) == ("0", "01", "40001")


def test_the_kind_and_facility_come_with_the_submission_as_signed(make_bhxh: Callable[..., Submission],
                                                                  make_checkin: Callable[..., Submission]) -> None:
    episode, checkin = make_bhxh("EP-W4", facility="79001"), make_checkin("EP-W4", facility="79001")
    assert (episode.file_type, episode.facility_code) == ("130", "79001")
    assert (checkin.file_type, checkin.facility_code) == ("0", "79001")
    assert read_signed_document(episode.body) == filed_as(episode)
    assert read_signed_document(checkin.body) == filed_as(checkin)
    with pytest.raises(ValueError, match="neither"):
        read_signed_document(b"<TONG_HOP><MA_LK>1</MA_LK></TONG_HOP>")
    with pytest.raises(ValueError, match="neither"):
        filed_as(dataclasses.replace(episode, file_type="131"))


async def test_the_channel_sends_what_the_submission_carries_without_reading_the_body(
        recorder: tuple[RecordingPortal, str], make_bhxh: Callable[..., Submission]) -> None:
    recording, base_url = recorder
    carried = dataclasses.replace(make_bhxh("EP-W8", facility="79001"), body=b"not XML: never parsed here")
    _, sent = await submit_once(base_url, recording, carried)
    assert sent["path"] == "/api/qd130/guiHoSoXmlQD3176"
    assert (sent["form"]["loaiHoSo"], sent["form"]["maTinh"], sent["form"]["maCSKCB"]) == ("130", "79", "79001")


async def test_a_submission_stored_by_an_older_version_is_read_from_its_body(
        recorder: tuple[RecordingPortal, str], make_checkin: Callable[..., Submission]) -> None:
    recording, base_url = recorder
    older = dataclasses.replace(make_checkin("EP-W9", facility="79001"), file_type="", facility_code="")
    _, sent = await submit_once(base_url, recording, older)
    assert sent["path"] == "/api/qd130/checkInKcbQd3176"
    assert (sent["form"]["loaiHoSo"], sent["form"]["maCSKCB"]) == ("0", "79001")


@pytest.mark.parametrize(("code", "error"), [("205", PermanentPortalError), ("403", TransientPortalError),
                                             ("500", TransientPortalError), ("999", PermanentPortalError)])
async def test_result_codes_are_classed_transient_or_permanent(
        recorder: tuple[RecordingPortal, str], make_bhxh: Callable[..., Submission], code: str,
        error: type[Exception]) -> None:
    recording, base_url = recorder
    recording.submit_code = code
    channel = channel_to(base_url)
    try:
        with pytest.raises(error) as caught:
            await channel.submit(make_bhxh("EP-W5"))
    finally:
        await channel.close()
    assert caught.value.result_code == code  # type: ignore[attr-defined]


def test_token_lifetime_reads_the_portal_instant_and_plain_numbers() -> None:
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert token_lifetime("2026-11-23T09:00:00.0000000Z", now) == 3600
    assert token_lifetime("2026-11-23T09:00:00", now) == 3600  # an instant without zone is UTC
    assert token_lifetime("1800", now) == 1800
    assert token_lifetime(now.timestamp() + 60, now) == 60
    assert token_lifetime("2026-11-23T07:00:00Z", now) == 0
    assert token_lifetime(None, now) == 3600


async def _post(portal: Portal, path: str, **kwargs: Any) -> dict[str, Any]:
    async with portal.session.post(portal.base_url + path, **kwargs) as response:
        assert response.status == 200
        return dict(await response.json())


async def _token(portal: Portal) -> dict[str, Any]:
    answer = await _post(portal, "/api/token/take", data={"username": "facility", "password": PASSWORD_MD5_UPPER})
    assert answer["maKetQua"] == "200"
    api_key: dict[str, Any] = answer["APIKey"]
    return api_key


async def test_the_emulator_answers_the_token_under_its_real_keys(portal: Portal) -> None:
    api_key = await _token(portal)
    assert set(api_key) == {"access_token", "id_token", "token_type", "username", "expires_in"}
    assert api_key["expires_in"].endswith("Z")
    assert 3500 < token_lifetime(api_key["expires_in"]) <= 3600


async def test_the_emulator_refuses_a_json_token_request(portal: Portal) -> None:
    answer = await _post(portal, "/api/token/take", json={"username": "facility", "password": PASSWORD_MD5_UPPER})
    assert answer["maKetQua"] == "205"
    assert "x-www-form-urlencoded" in answer["thongDiep"]
    assert (await portal.stats())["logins"] == 0


async def test_the_emulator_refuses_a_plain_password_with_401(portal: Portal) -> None:
    answer = await _post(portal, "/api/token/take", data={"username": "facility", "password": "s3cret-pass"})
    assert answer["maKetQua"] == "401"


async def test_the_emulator_refuses_a_raw_xml_body(portal: Portal, make_bhxh: Callable[..., Submission]) -> None:
    api_key = await _token(portal)
    headers = {"accessToken": api_key["access_token"], "tokenId": api_key["id_token"],
               "passwordHash": PASSWORD_MD5_UPPER, "Content-Type": "application/xml; charset=utf-8"}
    answer = await _post(portal, "/api/qd130/guiHoSoXmlQD3176", data=make_bhxh("EP-W6").body, headers=headers)
    assert answer["maKetQua"] == "205"
    assert (await portal.stats())["accepted"] == 0


def _form(submission: Submission, **changes: str) -> dict[str, str]:
    form = {"username": "facility", "loaiHoSo": "130", "maTinh": "40", "maCSKCB": "40001",
            "fileHSBase64": base64.b64encode(submission.body).decode("ascii")}
    form.update(changes)
    return {name: value for name, value in form.items() if value != "-"}


@pytest.mark.parametrize(("path", "changes", "words"), [
    ("/api/qd130/guiHoSoXmlQD3176", {"loaiHoSo": "0"}, "loaiHoSo must be 130"),
    ("/api/qd130/checkInKcbQd3176", {}, "loaiHoSo must be 0"),
    ("/api/qd130/guiHoSoXmlQD3176", {"maTinh": "-"}, "missing maTinh"),
    ("/api/qd130/guiHoSoXmlQD3176", {"maCSKCB": "40002"}, "is not the facility that signed"),
    ("/api/qd130/guiHoSoXmlQD3176", {"fileHSBase64": "not base64!"}, "not base64"),
])
async def test_the_emulator_refuses_a_form_that_is_not_the_portal_s(
        portal: Portal, make_bhxh: Callable[..., Submission], path: str, changes: dict[str, str],
        words: str) -> None:
    api_key = await _token(portal)
    headers = {"accessToken": api_key["access_token"], "tokenId": api_key["id_token"],
               "passwordHash": PASSWORD_MD5_UPPER}
    answer = await _post(portal, path, data=_form(make_bhxh("EP-W7"), **changes), headers=headers)
    assert answer["maKetQua"] == "205"
    assert words in answer["thongDiep"]


async def test_the_emulator_refuses_a_session_without_the_password_hash(
        portal: Portal, make_bhxh: Callable[..., Submission]) -> None:
    api_key = await _token(portal)
    headers = {"accessToken": api_key["access_token"], "tokenId": api_key["id_token"]}
    answer = await _post(portal, "/api/qd130/guiHoSoXmlQD3176", data=_form(make_bhxh("EP-W8")), headers=headers)
    assert answer["maKetQua"] == "401"


async def test_a_check_in_is_accepted_on_its_path_and_recorded_with_its_form(
        bhxh: PortalChannel, make_checkin: Callable[..., Submission], portal: Portal) -> None:
    receipt = await bhxh.submit(make_checkin("EP-W9"))
    assert receipt.raw["thongDiep"] == "Tiếp nhận thành công"
    [recorded] = (await portal.stats())["bhxh"]
    assert (recorded["loaiHoSo"], recorded["maCSKCB"], recorded["files"]) == ("0", "40001", ["XML0"])
    assert recorded["key"] == "XML0/EP-W9:v1"


async def test_a_check_in_missing_a_field_is_refused(bhxh: PortalChannel, signer: Signer,
                                                     make_checkin: Callable[..., Submission]) -> None:
    unsigned = unsigned_checkin("EP-W10").replace(b"<DU_PHONG></DU_PHONG>", b"")
    submission = dataclasses.replace(make_checkin("EP-W10"), body=signer.sign_xml_envelope(unsigned))
    with pytest.raises(PermanentPortalError) as caught:
        await bhxh.submit(submission)
    assert "in that order" in caught.value.reason


async def test_a_retransmission_without_our_header_is_recognised_by_its_digest(
        portal: Portal, make_bhxh: Callable[..., Submission]) -> None:
    api_key = await _token(portal)
    headers = {"accessToken": api_key["access_token"], "tokenId": api_key["id_token"],
               "passwordHash": PASSWORD_MD5_UPPER}
    form = _form(make_bhxh("EP-W11"))
    first = await _post(portal, "/api/qd130/guiHoSoXmlQD3176", data=form, headers=headers)
    second = await _post(portal, "/api/qd130/guiHoSoXmlQD3176", data=form, headers=headers)
    assert first["maGiaoDich"] == second["maGiaoDich"]
    stats = await portal.stats()
    assert (stats["accepted"], stats["duplicates"]) == (1, 1)


@pytest.fixture
async def two_facility_portal(signer: Signer) -> AsyncIterator[Portal]:
    config = EmulatorConfig(cert_pem=signer.certificate_pem, faults=Faults(), bhxh_accounts=(
        BhxhEmulatorAccount("40001_BV", "pass-one", ("40001",)),
        BhxhEmulatorAccount("79001_BV", "pass-two", ("79001",))))
    server = TestServer(create_emulator_app(config), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Portal(server, session)
    await server.close()


async def test_each_facility_logs_in_and_sends_with_its_own_account(
        two_facility_portal: Portal, make_bhxh: Callable[..., Submission]) -> None:
    channel = channel_to(two_facility_portal.base_url, (
        BhxhAccount("40001", "40001_BV", "pass-one", "40"), BhxhAccount("79001", "79001_BV", "pass-two", "79")))
    try:
        await channel.submit(make_bhxh("EP-A", facility="40001"))
        await channel.submit(make_bhxh("EP-B", facility="79001"))
        with pytest.raises(TransientPortalError, match="no BHXH portal account"):
            await channel.submit(make_bhxh("EP-C", facility="01001"))
    finally:
        await channel.close()
    stats = await two_facility_portal.stats()
    assert stats["logins"] == 2
    assert [(item["username"], item["maCSKCB"], item["maTinh"]) for item in stats["bhxh"]] == [
        ("40001_BV", "40001", "40"), ("79001_BV", "79001", "79")]


async def test_an_account_sending_for_another_facility_is_refused_403_and_the_document_waits(
        two_facility_portal: Portal, make_bhxh: Callable[..., Submission]) -> None:
    channel = channel_to(two_facility_portal.base_url, (BhxhAccount("79001", "40001_BV", "pass-one", "79"),))
    try:
        with pytest.raises(TransientPortalError) as caught:
            await channel.submit(make_bhxh("EP-D", facility="79001"))
    finally:
        await channel.close()
    assert caught.value.result_code == "403"
