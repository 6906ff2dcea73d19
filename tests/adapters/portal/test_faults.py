"""Each emulator fault: the channel classifies it, and retrying like the pipeline delivers every document once."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.portal.base import PermanentPortalError, Receipt, Submission, TransientPortalError
from adapters.portal.bhxh import BhxhChannel
from adapters.portal.hub import HubChannel
from gateway.config import BhxhChannelSettings, HubChannelSettings
from tests.adapters.portal.conftest import Portal, body_json, deliver_like_the_pipeline, keys

Channel = BhxhChannel | HubChannel


@pytest.fixture(params=["bhxh", "hub"])
def channel_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def channel(channel_kind: str, portal: Portal) -> AsyncIterator[Channel]:
    """A channel with a short timeout, so slow answers time out quickly."""
    common: dict[str, Any] = {"base_url": portal.base_url, "username": "facility", "password": "s3cret-pass",
                              "timeout_seconds": 0.5, "max_concurrency": 8}
    made: Channel = (BhxhChannel(BhxhChannelSettings(**common), name="bhxh_xml130") if channel_kind == "bhxh"
                     else HubChannel(HubChannelSettings(**common), name="moh_checkup"))
    yield made
    await made.close()


@pytest.fixture
def make(channel_kind: str, make_bhxh: Callable[..., Submission],
         make_hub: Callable[..., Submission]) -> Callable[..., Submission]:
    return make_bhxh if channel_kind == "bhxh" else make_hub


async def settle(portal: Portal, received: int) -> dict[str, Any]:
    """Stats once the emulator has finished processing `received` submissions (slow ones finish late)."""
    for _ in range(400):
        stats = await portal.stats()
        if stats["received"] >= received:
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"emulator never processed {received} submissions")


async def test_server_errors_are_transient_and_retries_deliver_each_document_once(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await portal.faults(fail_rate=1.0)
    with pytest.raises(TransientPortalError) as caught:
        await channel.submit(make("DOC-500"))
    assert caught.value.status == 500
    await portal.faults(fail_rate=0.5)
    submissions = [make(f"DOC-{number:03d}") for number in range(20)]
    await deliver_like_the_pipeline(channel, submissions)
    stats = await portal.stats()
    assert keys(stats) == sorted(item.idempotency_key for item in submissions)
    assert stats["server_errors"] > 1 and stats["duplicates"] == 0


async def test_rate_limit_is_transient_with_the_portal_retry_after(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await portal.faults(rate_limit_rate=1.0, retry_after=7)
    with pytest.raises(TransientPortalError) as caught:
        await channel.submit(make("DOC-429"))
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    await portal.faults(rate_limit_rate=0.5, retry_after=0)
    submissions = [make(f"DOC-{number:03d}") for number in range(10)] + [make("DOC-429")]
    await deliver_like_the_pipeline(channel, submissions)
    assert keys(await portal.stats()) == sorted(item.idempotency_key for item in submissions)


async def test_slow_answer_beyond_the_timeout_is_transient_and_the_retry_is_not_a_second_document(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await channel.submit(make("DOC-WARMUP"))
    await portal.faults(slow_rate=1.0, slow_seconds=1.0)
    submission = make("DOC-SLOW")
    with pytest.raises(TransientPortalError) as caught:
        await channel.submit(submission)
    assert caught.value.status is None
    await portal.faults(slow_rate=0.0)
    await settle(portal, received=2)
    await deliver_like_the_pipeline(channel, [submission])
    stats = await portal.stats()
    assert keys(stats) == ["DOC-SLOW:v1", "DOC-WARMUP:v1"]
    assert stats["duplicates"] == 1


async def test_dropped_connection_after_acceptance_is_transient_and_the_retry_gets_the_original_receipt(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await channel.submit(make("DOC-WARMUP"))
    await portal.faults(drop_rate=1.0)
    submission = make("DOC-DROP")
    with pytest.raises(TransientPortalError) as caught:
        await channel.submit(submission)
    assert caught.value.status is None
    stats = await portal.stats()
    assert (stats["dropped"], stats["accepted"]) == (1, 2)
    await portal.faults(drop_rate=0.0)
    receipts = await deliver_like_the_pipeline(channel, [submission])
    stats = await portal.stats()
    assert keys(stats) == ["DOC-DROP:v1", "DOC-WARMUP:v1"]
    assert stats["duplicates"] == 1
    assert receipts["DOC-DROP:v1"].transaction_id


async def test_revoked_token_is_replaced_by_one_transparent_login(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await channel.submit(make("DOC-T1"))
    await portal.faults(expire_tokens=True)
    receipt = await channel.submit(make("DOC-T2"))
    assert receipt.transaction_id
    stats = await portal.stats()
    assert (stats["logins"], stats["token_refusals"], stats["accepted"]) == (2, 1, 2)


async def test_a_token_the_portal_refuses_even_fresh_is_transient_not_a_loop(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await portal.faults(token_ttl=0)
    with pytest.raises(TransientPortalError, match="fresh access token"):
        await channel.submit(make("DOC-TTL"))
    stats = await portal.stats()
    assert (stats["logins"], stats["token_refusals"], stats["received"]) == (2, 2, 0)


async def test_every_fault_at_once_still_delivers_each_document_exactly_once(
        channel: Channel, make: Callable[..., Submission], portal: Portal) -> None:
    await channel.submit(make("DOC-WARMUP"))
    await portal.faults(fail_rate=0.15, rate_limit_rate=0.15, retry_after=0, slow_rate=0.1, slow_seconds=0.8,
                        drop_rate=0.15, expire_tokens=True)
    submissions = [make(f"DOC-{number:03d}", version=1 + number % 2) for number in range(30)]
    await deliver_like_the_pipeline(channel, submissions)
    stats = await portal.stats()
    accepted = stats["accepted_keys"]
    assert len(accepted) == len(set(accepted)) == 31
    assert sorted(accepted) == sorted([item.idempotency_key for item in submissions] + ["DOC-WARMUP:v1"])
    assert stats["rejected"] == 0 and stats["signature_failures"] == 0


async def test_concurrency_cap_is_honoured(portal: Portal, make_hub: Callable[..., Submission]) -> None:
    channel = HubChannel(HubChannelSettings(base_url=portal.base_url, username="facility", password="s3cret-pass",
                                            max_concurrency=2), name="moh_checkup")
    try:
        await channel.submit(make_hub("DOC-WARMUP"))
        await portal.faults(slow_rate=1.0, slow_seconds=0.2)
        outcomes = await channel.submit_many([make_hub(f"DOC-{number}") for number in range(6)])
    finally:
        await channel.close()
    assert all(not isinstance(outcome, Exception) for outcome in outcomes)
    assert (await portal.stats())["max_in_flight"] == 2


@pytest.fixture
async def batching_hub(portal: Portal) -> AsyncIterator[HubChannel]:
    channel = HubChannel(HubChannelSettings(base_url=portal.base_url, username="facility", password="s3cret-pass",
                                            timeout_seconds=0.5, batch_size=4), name="moh_checkup")
    yield channel
    await channel.close()


async def test_hub_batch_gives_each_message_its_own_outcome(
        batching_hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    submissions = [make_hub(f"KSK-{number}") for number in range(9)]
    submissions[5] = make_hub("KSK-5", sender_id="123")
    outcomes = await batching_hub.submit_many(submissions)
    refused = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, PermanentPortalError)]
    assert refused == [5] and "13-digit" in outcomes[5].reason  # type: ignore[union-attr]
    receipts = [outcome for outcome in outcomes if isinstance(outcome, Receipt)]
    assert len({receipt.transaction_id for receipt in receipts}) == 8
    stats = await portal.stats()
    assert (stats["received"], stats["accepted"], stats["rejected"], stats["logins"]) == (9, 8, 1, 1)


async def test_hub_batches_under_every_fault_deliver_each_message_exactly_once(
        batching_hub: HubChannel, make_hub: Callable[..., Submission], portal: Portal) -> None:
    await batching_hub.submit(make_hub("KSK-WARMUP"))
    await portal.faults(fail_rate=0.2, rate_limit_rate=0.1, retry_after=0, slow_rate=0.1, slow_seconds=0.8,
                        drop_rate=0.2, expire_tokens=True)
    submissions = [make_hub(f"KSK-{number:03d}") for number in range(30)]
    await deliver_like_the_pipeline(batching_hub, submissions)
    accepted = (await portal.stats())["accepted_keys"]
    assert len(accepted) == len(set(accepted)) == 31
    # a batch carries no Idempotency-Key per message: the hub files each under its header.msg_id
    assert sorted(accepted) == sorted([body_json(item)["header"]["msg_id"] for item in submissions] + ["KSK-WARMUP:v1"])
