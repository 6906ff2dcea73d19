"""The delivery process (gateway/delivery_workers.py): the portal clients in a real process of their own,
against the real emulator; the gateway sees the same receipts, the same classified errors and the same
metrics as with the clients in its own process."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.portal.base import PermanentPortalError, Submission, TransientPortalError
from gateway.config import BhxhChannelSettings, HubChannelSettings, PortalSettings
from gateway.delivery_workers import DeliveryProcess, DeliverySetup
from gateway.metrics import Metrics
from tests.adapters.portal.conftest import Portal

NAMES = ["bhxh_checkin", "bhxh_xml130", "moh_checkup"]


def portal_settings(base_url: str) -> PortalSettings:
    account = {"base_url": base_url, "username": "facility", "password": "s3cret-pass", "timeout_seconds": 5.0}
    return PortalSettings(bhxh=BhxhChannelSettings(**account), hub=HubChannelSettings(**account))


@pytest.fixture
async def delivery(portal: Portal, metrics: Metrics) -> AsyncIterator[DeliveryProcess]:
    process = DeliveryProcess(DeliverySetup(portal_settings(portal.base_url), (), "warning", "json"), metrics)
    await process.start()
    yield process
    await process.close()


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(f"healthbook_gateway_{name}", labels)


async def test_a_submission_is_delivered_by_the_process_and_its_metrics_come_back(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission], make_hub: Callable[..., Submission],
        portal: Portal, metrics: Metrics) -> None:
    channels = delivery.channels(NAMES)
    receipt = await channels["bhxh_xml130"].submit(make_bhxh("EP-0101"))
    assert receipt.result_code == "200" and receipt.transaction_id.startswith("GD")
    assert (await channels["moh_checkup"].submit(make_hub("KSK-0101"))).transaction_id
    stats = await portal.stats()
    assert (stats["accepted"], stats["rejected"]) == (2, 0)
    assert sample(metrics, "portal_http_responses_total", {"channel": "bhxh_xml130", "status": "200"}) == 2
    assert sample(metrics, "submit_latency_seconds_count", {"channel": "bhxh_xml130"}) == 1
    assert sample(metrics, "submit_latency_seconds_count", {"channel": "moh_checkup"}) == 1


async def test_a_refusal_comes_back_classified_with_the_portals_reason(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission]) -> None:
    submission = make_bhxh("EP-0102")
    tampered = dataclasses.replace(submission, body=submission.body.replace(b"<MACSKCB>40001", b"<MACSKCB>40002"))
    with pytest.raises(PermanentPortalError) as caught:
        await delivery.channels(NAMES)["bhxh_xml130"].submit(tampered)
    assert "signature" in caught.value.reason


async def test_a_failure_the_portal_may_get_over_is_transient_with_its_retry_after(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    await portal.faults(rate_limit_rate=1.0, retry_after=7)
    with pytest.raises(TransientPortalError) as caught:
        await delivery.channels(NAMES)["bhxh_xml130"].submit(make_bhxh("EP-0103"))
    assert (caught.value.status, caught.value.retry_after) == (429, 7)


async def test_a_dead_process_fails_the_attempt_as_transient_and_is_started_again(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    channel = delivery.channels(NAMES)["bhxh_xml130"]
    await portal.faults(slow_rate=1.0, slow_seconds=5)
    attempt = asyncio.create_task(channel.submit(make_bhxh("EP-0104")))
    await asyncio.sleep(1.5)  # the process is waiting for the slow portal
    assert delivery.pid is not None
    os.kill(delivery.pid, signal.SIGKILL)  # the OOM killer, say
    with pytest.raises(TransientPortalError) as caught:
        await attempt
    assert "stopped" in caught.value.reason
    await portal.faults(slow_rate=0.0)
    assert (await channel.submit(make_bhxh("EP-0105"))).result_code == "200"


async def test_a_stop_signal_to_the_whole_group_does_not_cut_an_exchange_short(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission], portal: Portal) -> None:
    """systemd (without KillMode=mixed) and Ctrl-C signal every process of the group: the delivery process
    leaves that to the gateway, which stops it once the exchanges under way are answered."""
    await portal.faults(slow_rate=1.0, slow_seconds=1.5)
    attempt = asyncio.create_task(delivery.channels(NAMES)["bhxh_xml130"].submit(make_bhxh("EP-0106")))
    await asyncio.sleep(0.7)
    assert delivery.pid is not None
    os.kill(delivery.pid, signal.SIGTERM)
    os.kill(delivery.pid, signal.SIGINT)
    assert (await attempt).result_code == "200"


async def test_a_hung_process_is_given_up_on_and_replaced(
        delivery: DeliveryProcess, make_bhxh: Callable[..., Submission]) -> None:
    channel = delivery.channels(NAMES)["bhxh_xml130"]
    delivery._answer_within = 2.0  # the real bound is minutes: four portal timeouts and more
    hung = delivery.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    try:
        with pytest.raises(TransientPortalError) as caught:
            await channel.submit(make_bhxh("EP-0107"))
        assert "no answer" in caught.value.reason
        assert (await channel.submit(make_bhxh("EP-0108"))).result_code == "200"
        assert delivery.pid != hung
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
