"""Both channels against the real emulator: receipts, rejections with the portal's reason, login rules
(the hub's QĐ 1551 answers and refusals in detail: test_hub.py)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from adapters.portal.base import PermanentPortalError, Submission, TransientPortalError
from adapters.portal.bhxh import BhxhChannel
from adapters.portal.hub import HubChannel
from gateway.channels import open_channel
from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.metrics import Metrics
from tests.adapters.portal.conftest import Portal, keys, spec


async def test_bhxh_accepts_a_signed_envelope_and_returns_its_receipt(
        bhxh: BhxhChannel, make_bhxh: Callable[..., Submission], portal: Portal, metrics: Metrics) -> None:
    receipt = await bhxh.submit(make_bhxh("EP-0001"))
    assert receipt.result_code == "200"
    assert receipt.transaction_id.startswith("GD")
    assert len(receipt.received_at) == 14
    stats = await portal.stats()
    assert (stats["received"], stats["accepted"], stats["rejected"], stats["logins"]) == (1, 1, 0, 1)
    assert keys(stats) == ["EP-0001:v1"]
    assert metrics.registry.get_sample_value(
        "healthbook_gateway_portal_http_responses_total", {"channel": "bhxh_xml130", "status": "200"}) == 2
    assert metrics.registry.get_sample_value(
        "healthbook_gateway_submit_latency_seconds_count", {"channel": "bhxh_xml130"}) == 1


async def test_token_is_reused_across_submissions(
        hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    for number in range(3):
        await hub.submit(make_hub(f"KSK-{number}"))
    assert (await portal.stats())["logins"] == 1


async def test_a_retransmission_gets_the_original_receipt_and_is_counted_as_duplicate(
        bhxh: BhxhChannel, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    submission = make_bhxh("EP-0002", version=3)
    first = await bhxh.submit(submission)
    second = await bhxh.submit(submission)
    assert second.transaction_id == first.transaction_id
    stats = await portal.stats()
    assert (stats["accepted"], stats["duplicates"]) == (1, 1)
    assert keys(stats) == ["EP-0002:v3"]


async def test_a_new_version_of_the_same_episode_is_a_new_document(
        bhxh: BhxhChannel, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    await bhxh.submit(make_bhxh("EP-0003", version=1))
    await bhxh.submit(make_bhxh("EP-0003", version=2))
    assert keys(await portal.stats()) == ["EP-0003:v1", "EP-0003:v2"]


async def test_tampered_envelope_is_refused_for_good_as_a_signature_failure(
        bhxh: BhxhChannel, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    submission = make_bhxh("EP-0004")
    tampered = dataclasses.replace(submission, body=submission.body.replace(b"<MACSKCB>40001", b"<MACSKCB>40002"))
    with pytest.raises(PermanentPortalError) as caught:
        await bhxh.submit(tampered)
    assert "signature" in caught.value.reason
    stats = await portal.stats()
    assert (stats["rejected"], stats["signature_failures"], stats["accepted"]) == (1, 1, 0)


async def test_envelope_whose_key_names_another_episode_is_refused(
        bhxh: BhxhChannel, make_bhxh: Callable[..., Submission]) -> None:
    submission = dataclasses.replace(make_bhxh("EP-0005"), idempotency_key="EP-9999:v1")
    with pytest.raises(PermanentPortalError) as caught:
        await bhxh.submit(submission)
    assert "MA_LK" in caught.value.reason


@pytest.mark.parametrize("channel_type", ["bhxh", "hub"])
async def test_wrong_password_is_transient_and_never_dead_letters_the_document(
        channel_type: str, portal: Portal, make_bhxh: Callable[..., Submission],
        make_hub: Callable[..., Submission]) -> None:
    if channel_type == "bhxh":
        channel: BhxhChannel | HubChannel = BhxhChannel(BhxhChannelSettings(
            base_url=portal.base_url, username="facility", password="wrong"), name="bhxh_xml130")
        submission = make_bhxh("EP-0006")
    else:
        channel = HubChannel(HubChannelSettings(base_url=portal.base_url, username="facility",
                                                password="wrong"), name="moh_checkup")
        submission = make_hub("KSK-0006")
    try:
        with pytest.raises(TransientPortalError) as caught:
            await channel.submit(submission)
    finally:
        await channel.close()
    assert "login refused" in caught.value.reason
    assert (await portal.stats())["received"] == 0


async def test_unreachable_portal_is_transient_with_no_status(
        make_hub: Callable[..., Submission], unused_tcp_port: int) -> None:
    metrics = Metrics()
    channel = open_channel(spec("moh_checkup"), HubChannelSettings(base_url=f"http://127.0.0.1:{unused_tcp_port}"),
                           metrics)
    try:
        with pytest.raises(TransientPortalError) as caught:
            await channel.submit(make_hub("KSK-0009"))
    finally:
        await channel.close()
    assert caught.value.status is None
    assert metrics.registry.get_sample_value(
        "healthbook_gateway_portal_http_responses_total", {"channel": "moh_checkup", "status": "0"}) == 1
