"""HL7 v2 intake: screen a framed message, store it durably, and only then acknowledge it.

Acknowledgement modes. Original mode (MSH-15 and MSH-16 empty) answers AA/AE/AR; enhanced mode (either
valued) answers the commit acknowledgement CA/CE/CR. Every complete frame is answered by default, whatever
MSH-15 asks, since a sender that waits for an answer it asked not to get stalls its queue. With
`mllp.honour_accept_ack_type = true` MSH-15 is followed (HL7 table 0155): AL or empty always, NE never, ER only
for a refusal, SU only for an acceptance; when none is due nothing is written back and the connection stays
open for the next message; the message is stored (or refused) all the same.
No application acknowledgement follows (MSH-16): once a message is stored, turning it into a health-book
record is the gateway's own job, visible in its queues and dead-letter state.

Batches (FHS/BHS ... BTS/FTS in one frame) are taken message by message, each stored and acknowledged as if
it had come alone, and answered with one acknowledgement batch (hl7v2.batch) holding every message's ACK.

Character sets. A message that decodes strictly as its MSH-18 declares is read as declared. When MSH-18 is
empty or unknown, or the bytes do not fit it, the sender's configured legacy charset (`mllp.sender_charsets`,
by MSH-3.1 or MSH-4.1) is used; without one, an empty MSH-18 means `mllp.default_charset` and a mismatch is
refused. The ACK is encoded in the charset the message was read in.

Retransmissions (same sender MSH-3|MSH-4 and MSH-10) get the stored original ACK byte for byte and are not
stored again. A message that was refused was not stored, so its retransmission is screened (and refused) again.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.mllp import Frame
from gateway.config import MllpSettings, SenderRule
from gateway.logs import correlation, get_logger, loggable, new_correlation_id
from gateway.metrics import Metrics, message_type_label
from gateway.store import Inbound, Store
from mappings.hl7v2.ack import build_ack, commit_ack_wanted
from mappings.hl7v2.batch import batch_ack, is_batch, split_batch
from mappings.hl7v2.header import (
    MessageHeader,
    codec_for,
    content_digest,
    decode,
    header_is_ascii,
    parse_header,
    read_header,
)
from mappings.model import Issue

log = get_logger(__name__)

Screen = Callable[[str], list[Issue]]
# Issues that mean "we will not take this kind of message at all" (AR) rather than "this content is wrong" (AE).
_REJECT_CODES = frozenset({"duplicate-control-id",
                           "unsupported-message-type", "unsupported-event", "unsupported-version",
                           "unsupported-processing-id", "sender-not-allowed", "message-too-large", "msh-invalid",
                           "charset-mismatch", "unknown-facility"})
# ACK control ids: unique per process start (random prefix) and per ACK (sequence), and cheap.
_ACK_ID_PREFIX = uuid.uuid4().hex[:8]
_ACK_SEQUENCE = itertools.count(1)
LOGGED_ID = 64  # characters of a control id in a log line: an oversize MSH-10 is refused, not logged whole


@dataclass(frozen=True, slots=True)
class Answer:
    """The acknowledgement for one message; `message_id` is set when it is on disk (now or from before)."""

    code: str
    ack: bytes
    message_id: int | None = None
    duplicate: bool = False
    issues: tuple[Issue, ...] = ()
    header: MessageHeader | None = None


def _encoded_ack(header: MessageHeader | None, code: str, codec: str, text: str = "",
                issues: tuple[Issue, ...] = ()) -> bytes:
    """An ACK with its own control id and time, in the charset the message was read in."""
    return build_ack(header, code, control_id=f"{_ACK_ID_PREFIX}{next(_ACK_SEQUENCE)}",
                     now=datetime.now(UTC), text=text, issues=issues).encode(codec, errors="replace")


def _replay_id(control_id: str, text: str, lookup_digest: Callable[[str], str]) -> str:
    """A replay's key: MSH-10 and its content's digest, keyed like every lookup of personal data (migration 6)."""
    return f"{control_id}~replay:{lookup_digest(hashlib.sha256(text.encode('utf-8')).hexdigest()[:20])[:20]}"


class Hl7Intake:
    """The MLLP handler: every message gets exactly one clear answer, and AA/CA only once it is on disk."""

    def __init__(self, store: Store, metrics: Metrics, settings: MllpSettings, screen: Screen,
                 facility_refusals: Callable[[str, str], list[Issue]] | None = None) -> None:
        self._store = store
        self._facility_refusals = facility_refusals  # (MSH-4, component separator): several facilities served
        self._metrics = metrics
        self._settings = settings
        self._screen = screen
        self._networks = [ipaddress.ip_network(rule.address, strict=False) if rule.address else None
                          for rule in settings.allowed_senders]
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """A metric's labelled child, looked up once: label checks cost more than the count on this hot path."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def store_and_ack(self, frame: Frame) -> bytes:
        """Answer one frame (b"" when MSH-15 wants no answer); raises only when the store cannot take it, so no
        ACK promises what is not on disk."""
        if is_batch(frame.data) and not frame.oversize:
            return await self._batch(frame)
        with correlation(new_correlation_id(), source="mllp") as correlation_id:
            answer = await self._answer(frame, correlation_id)
            wanted = commit_ack_wanted(answer.header, answer.code) or not self._settings.honour_accept_ack_type
            return answer.ack if wanted else b""

    async def _batch(self, frame: Frame) -> bytes:
        """Each message of a batch in turn, then the acknowledgement batch with every message's ACK."""
        received = split_batch(frame.data)
        acks: list[list[bytes]] = []
        for batch in received.batches:
            acks.append([])
            for message in batch.messages:
                with correlation(new_correlation_id(), source="mllp") as correlation_id:
                    single = Frame(message, frame.peer_host, frame.peer_port, frame.client_cn)
                    acks[-1].append((await self._answer(single, correlation_id)).ack)
        log.info("hl7_batch_answered", batches=len(acks), messages=sum(map(len, acks)))
        return batch_ack(received, acks, control_id=f"{_ACK_ID_PREFIX}{next(_ACK_SEQUENCE)}", now=datetime.now(UTC))

    async def replay(self, data: bytes) -> Answer:
        """Take an operator's corrected message through the same screen and store as MLLP, as a new message.

        It keeps its sender (MSH-3|MSH-4) and its MSH-10, which usually repeats the refused original's, keyed
        with a digest of its content: the same file replayed twice is stored once, a further correction is
        stored again. The allowlist does not apply: the operator is not a network sender.
        """
        with correlation(new_correlation_id(), source="replay") as correlation_id:
            return await self._answer(Frame(data, "", 0), correlation_id, replay=True)

    async def _answer(self, frame: Frame, correlation_id: str, replay: bool = False) -> Answer:
        """Screen, store and acknowledge one message, counting the answer."""
        started = time.perf_counter()
        source = "replay" if replay else "mllp"
        answer = await self._screen_and_store(frame, correlation_id, source)
        self._child(self._metrics.acks, source, answer.code).inc()
        self._child(self._metrics.ack_latency, source).observe(time.perf_counter() - started)
        if not replay:
            self._metrics.count_sender("mllp", self._sender_label(frame, answer.header), answer.code in ("AA", "CA"))
        return answer

    def _sender_label(self, frame: Frame, header: MessageHeader | None) -> str:
        """The matching allowlist rule's name for metrics; without one the message counts as other."""
        rule = self._sender_rule(frame, header) if header is not None and self._settings.allowed_senders else None
        return rule.label if rule else ""

    async def _screen_and_store(self, frame: Frame, correlation_id: str, source: str) -> Answer:
        default = self._settings.default_charset
        header = read_header(frame.data)
        if isinstance(header, Issue):
            log.warning("hl7_unreadable", reason=loggable(header.message), peer=frame.peer_host)
            return self._refuse(None, (header,), default)
        legacy = self._legacy_charset(header)
        if frame.oversize:
            return self._refuse(header, (Issue("MSH", "message-too-large", (
                f"message exceeds the {self._settings.max_message_bytes}-byte limit of this listener")),),
                codec_for(header.charset) or legacy or default)
        decoded = self._decode(frame.data, header, legacy)
        if isinstance(decoded, Issue):
            return self._refuse(header, (decoded,), legacy or default)
        text, codec = decoded
        if not header_is_ascii(frame.data):
            reread = parse_header(text)
            if isinstance(reread, Issue):
                return self._refuse(header, (reread,), codec)
            header = reread
        self._child(self._metrics.messages_received, source, message_type_label(header.message_type)).inc()
        replay = source == "replay"
        issues = self._processing_refusals(header) or ([] if replay else self._refusals(frame, header)) or [
            issue for issue in self._screen(text) if issue.severity == "error"]
        if issues:
            return self._refuse(header, tuple(issues), codec)
        code = "CA" if header.enhanced_mode else "AA"
        # A replay keeps its MSH-10, marked with a keyed digest of its content: the same file replayed twice is
        # stored once, a further correction again, and a search by control id finds the replays beside the original.
        control_id = _replay_id(header.control_id, text, self._store.lookup_digest) if replay else header.control_id
        stored = await self._store.store_inbound(Inbound(
            source=source, sender=header.sender, control_id=control_id, message_type=header.message_type,
            correlation_id=correlation_id, payload=text.encode("utf-8"),
            ack=_encoded_ack(header, code, codec), content_digest=content_digest(text)))
        if not stored.same_content:
            return self._refuse(header, (Issue(
                "MSH-10", "duplicate-control-id",
                f"message control id {header.control_id!r} was already used by this sender for a different message"
                f" (inbox:{stored.message_id}); send it with a new MSH-10"),), codec)
        if stored.duplicate:
            self._child(self._metrics.duplicates, source).inc()
        log.info("hl7_stored", message_type=header.message_type, control_id=loggable(header.control_id, LOGGED_ID),
                 replay=replay, message_id=stored.message_id, retransmission=stored.duplicate, bytes=len(frame.data))
        return Answer(code, stored.ack, stored.message_id, stored.duplicate, header=header)

    def _decode(self, data: bytes, header: MessageHeader, legacy: str | None) -> tuple[str, str] | Issue:
        """The text and the codec it was read with: MSH-18 when the bytes fit it, else the sender's charset."""
        declared = codec_for(header.charset)
        if declared:
            text = decode(data, declared)
            if isinstance(text, str):
                return text, declared
            if legacy is None:
                return text
        codec = legacy or self._settings.default_charset
        text = decode(data, codec)
        return (text, codec) if isinstance(text, str) else text

    def _processing_refusals(self, header: MessageHeader) -> list[Issue]:
        """Only production messages (MSH-11, by default P) may become health-book records."""
        processing_id = header.processing_mode
        if processing_id in self._settings.accepted_processing_ids:
            return []
        accepted = ", ".join(self._settings.accepted_processing_ids)
        return [Issue("MSH-11", "unsupported-processing-id",
                      f"processing id {processing_id or '(empty)'!r} is not accepted here (accepted: {accepted});"
                      " test and training messages must not reach the national health book")]

    def _refusals(self, frame: Frame, header: MessageHeader) -> list[Issue]:
        """Reasons to refuse a message before reading its content: no control id, sender not allowed."""
        if not header.control_id:
            return [Issue("MSH-10", "required", "message control id is required")]
        if self._settings.allowed_senders and not self._sender_allowed(frame, header):
            return [Issue("MSH-4", "sender-not-allowed", "this sender is not on the gateway's allowlist")]
        if self._facility_refusals is not None:
            return self._facility_refusals(header.sending_facility, header.encoding_characters[:1] or "^")
        return []

    def _sender_allowed(self, frame: Frame, header: MessageHeader) -> bool:
        return self._sender_rule(frame, header) is not None

    def _sender_rule(self, frame: Frame, header: MessageHeader) -> SenderRule | None:
        """The first allowlist rule this message matches: it is allowed, and named in metrics."""
        application, facility_parts = header.application_id, header.facility_ids
        address = ipaddress.ip_address(frame.peer_host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule, network in zip(self._settings.allowed_senders, self._networks):
            if network is not None and address not in network:
                continue
            if rule.sending_application and rule.sending_application != application:
                continue
            if rule.sending_facility and rule.sending_facility not in facility_parts:
                continue
            if rule.client_cert_cn and rule.client_cert_cn != frame.client_cn:
                continue
            return rule
        return None

    def _refuse(self, header: MessageHeader | None, issues: tuple[Issue, ...], codec: str) -> Answer:
        reject = any(issue.code in _REJECT_CODES for issue in issues)
        enhanced = header is not None and header.enhanced_mode
        code = ("CR" if reject else "CE") if enhanced else ("AR" if reject else "AE")
        for issue in issues:
            self._child(self._metrics.mapping_errors, "mllp", issue.code).inc()
        log.warning("hl7_refused", ack_code=code, control_id=loggable(header.control_id, LOGGED_ID) if header else "",
                    problems=[f"{loggable(issue.location)} {issue.code}" for issue in issues])
        return Answer(code, _encoded_ack(header, code, codec, issues[0].message, issues), issues=issues,
                      header=header)

    def _legacy_charset(self, header: MessageHeader) -> str | None:
        """The sender's configured legacy charset, by MSH-3.1 then MSH-4.1."""
        charsets = self._settings.sender_charsets
        if not charsets:
            return None
        for key in (header.application_id, header.facility_ids[0]):
            if key in charsets:
                return charsets[key]
        return None
