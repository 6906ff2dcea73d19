"""HL7 v2 intake: screen a framed message, store it durably, and only then acknowledge it."""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from adapters.hl7v2_wire import MessageHeader, WireError, build_ack, codec_for, decode, parse_header
from adapters.mllp import Frame
from gateway.config import MllpSettings
from gateway.logs import correlation, get_logger, new_correlation_id
from gateway.metrics import Metrics, message_type_label
from gateway.store import Inbound, Store
from mappings.model import Issue

log = get_logger(__name__)

Screen = Callable[[str], list[Issue]]
# Issues that mean "we will not take this kind of message at all" (AR) rather than "this content is wrong" (AE).
_REJECT_CODES = frozenset({"unsupported-message-type", "unsupported-event", "unsupported-version",
                           "unsupported-processing-id", "sender-not-allowed", "message-too-large", "msh-invalid"})


class Hl7Intake:
    """The MLLP handler: every message gets exactly one clear answer, and AA/CA only once it is on disk."""

    def __init__(self, store: Store, metrics: Metrics, settings: MllpSettings, screen: Screen) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._screen = screen

    async def store_and_ack(self, frame: Frame) -> bytes:
        started = time.perf_counter()
        with correlation(new_correlation_id(), source="mllp") as correlation_id:
            code, answer = await self._answer(frame, correlation_id)
            self._metrics.acks.labels("mllp", code).inc()
            self._metrics.ack_latency.labels("mllp").observe(time.perf_counter() - started)
            return answer

    async def _answer(self, frame: Frame, correlation_id: str) -> tuple[str, bytes]:
        """The acknowledgement code and the encoded ACK for one frame."""
        fallback = self._fallback_charset(frame.data)
        try:
            text = decode(frame.data, fallback)
            header = parse_header(text)
        except WireError as exc:
            log.warning("hl7_unreadable", reason=str(exc), peer=frame.peer_host)
            self._metrics.mapping_errors.labels("mllp", "msh-invalid").inc()
            ack = build_ack(None, "AR", str(exc), (Issue("MSH", "msh-invalid", str(exc)),))
            return "AR", ack.encode(fallback, errors="replace")
        codec = codec_for(header.charset) or fallback
        self._metrics.messages_received.labels("mllp", message_type_label(header.message_type)).inc()
        log.info("hl7_received", message_type=header.message_type, control_id=header.control_id,
                 sender=header.sender, bytes=len(frame.data))
        issues = self._refusals(frame, header) or [i for i in self._screen(text) if i.severity == "error"]
        if issues:
            code, ack = self._refuse(header, tuple(issues))
            return code, ack.encode(codec, errors="replace")
        accepted = "CA" if header.enhanced_mode else "AA"
        stored = await self._store.store_inbound(Inbound(
            source="mllp", sender=header.sender, control_id=header.control_id, message_type=header.message_type,
            correlation_id=correlation_id, payload=text.encode("utf-8"),
            ack=build_ack(header, accepted).encode(codec, errors="replace")))
        if stored.duplicate:
            self._metrics.duplicates.labels("mllp").inc()
            log.info("hl7_retransmission", control_id=header.control_id, message_id=stored.message_id)
        else:
            log.info("hl7_stored", message_id=stored.message_id)
        return accepted, stored.ack

    def _refusals(self, frame: Frame, header: MessageHeader) -> list[Issue]:
        """Reasons to refuse a message before reading its content: size, sender."""
        if frame.oversize:
            return [Issue("MSH", "message-too-large",
                          f"message exceeds the {self._settings.max_message_bytes}-byte limit of this listener")]
        if not header.control_id:
            return [Issue("MSH-10", "required", "message control id is required")]
        if self._settings.allowed_senders and not self._sender_allowed(frame.peer_host, header):
            return [Issue("MSH-4", "sender-not-allowed", "this sender is not on the gateway's allowlist")]
        return []

    def _sender_allowed(self, peer_host: str, header: MessageHeader) -> bool:
        component = header.encoding_characters[:1] or "^"
        application = header.sending_application.split(component)[0]
        facility_parts = header.sending_facility.split(component)
        for rule in self._settings.allowed_senders:
            if rule.address and ipaddress.ip_address(peer_host) not in ipaddress.ip_network(rule.address, strict=False):
                continue
            if rule.sending_application and rule.sending_application != application:
                continue
            if rule.sending_facility and rule.sending_facility not in facility_parts[:2]:
                continue
            return True
        return False

    def _refuse(self, header: MessageHeader, issues: tuple[Issue, ...]) -> tuple[str, str]:
        reject = any(issue.code in _REJECT_CODES for issue in issues)
        code = ("CR" if reject else "CE") if header.enhanced_mode else ("AR" if reject else "AE")
        for issue in issues:
            self._metrics.mapping_errors.labels("mllp", issue.code).inc()
        log.warning("hl7_refused", ack_code=code, control_id=header.control_id,
                    problems=[f"{issue.location} {issue.code}" for issue in issues])
        return code, build_ack(header, code, issues[0].message, issues)

    def _fallback_charset(self, data: bytes) -> str:
        """The sender's configured legacy charset (by MSH-3 or MSH-4), else the listener default."""
        if self._settings.sender_charsets:
            try:
                head = parse_header(data[:2048].decode("latin-1"))
            except WireError:
                return self._settings.default_charset
            component = head.encoding_characters[:1] or "^"
            for key in (head.sending_application.split(component)[0], head.sending_facility.split(component)[0]):
                if key in self._settings.sender_charsets:
                    return self._settings.sender_charsets[key]
        return self._settings.default_charset
