"""Fuzzing the two entry points over real sockets: hostile HL7 v2 frames to MLLP, hostile requests to FHIR.

The invariants: every complete MLLP frame gets one ACK (AA/AE/AR or CA/CE/CR) on a connection that stays
open; every FHIR request gets a FHIR answer that is not a 500; no log line carries a control character (the
raw bytes of a message). The servers are built as gateway/app.py builds them (real SQLite store, real
screen and validation) and run on their own event loop in a thread, so that hypothesis drives them from
plain blocking sockets. Used by tests/e2e/test_fuzz_entry_points.py (bounded) and bench/fuzz.py (`make fuzz`).
"""
from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from hypothesis import strategies as st
from structlog.testing import capture_logs

from adapters.fhir_api import FhirApi
from adapters.mllp import MllpServer
from gateway.app import validate_fhir
from gateway.config import HttpSettings, MllpSettings
from gateway.encryption import PayloadCipher
from gateway.fhir_intake import FhirIntake
from gateway.intake import Hl7Intake
from gateway.metrics import Metrics
from gateway.store import SqliteStore
from mappings.hl7v2 import screen
from mappings.hl7v2.framing import END_BLOCK, END_BYTE, START_BLOCK
from tests.conftest import CORPUS

# 409: a Bundle.identifier this sender already used for other content (mutated inputs keep the identifier)
FHIR_STATUSES = {200, 201, 400, 401, 403, 404, 405, 406, 409, 413, 415, 422}
LOG_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
MAX_MESSAGE_BYTES = 64 * 1024
# MSA, the field separator the message declared (one character, in whatever charset), then MSA-1
MSA = re.compile(rb"(?:^|\r)MSA(.{1,4}?)(?:AA|AE|AR|CA|CE|CR)(?:\1|\r)", re.DOTALL)
# A batch holding no message (HL7 allows it, BTS-1 = 0) is answered by an acknowledgement batch holding none
EMPTY_BATCH_ANSWER = re.compile(rb"(?:FHS[^\r]*\r)?BHS[^\r]*\rBTS.0\r(?:FTS[^\r]*\r)?")


# ---- inputs -----------------------------------------------------------------------------------------

def _corpus_messages() -> list[str]:
    return [path.read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r")
            for path in sorted((CORPUS / "hl7v2").glob("*.hl7"))]


NASTY_TEXT = ["\x00", "A\x00B", "\x01\x02\x7f", "\x1b[31m", "\u0085", "\ufffd", "\\X00\\", "\\X0D0A\\", "\\",
              "|", "^^^^", "~~~", "&", "9.9", "3.0", "2.5", "", " ", "é" * 300, "N" * 256, "N" * 5000,
              "UNICODE UTF-8", "UTF-8\x00", "8859/1", "CP1258", "UNICODE UTF-16", "x" * 40, "P", "T", "AL", "NE"]
# text fields of every alphabet, nasty strings, and long runs (the 255-character names)
field_values = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=30),
    st.text(alphabet=st.characters(max_codepoint=0x2ff), max_size=30),
    st.builds(lambda char, count: char * count, st.sampled_from("A\x00é|^"), st.integers(200, 3000)),
)
ENCODINGS = ["utf-8", "cp1258", "latin-1", "utf-16", "ascii"]


@st.composite
def hl7_payloads(draw: st.DrawFn) -> bytes:
    """A corpus message with a few fields replaced, cut or re-encoded, or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400)).replace(END_BYTE, b" ")
    text = draw(st.sampled_from(_corpus_messages()))
    segments = [segment.split("|") for segment in text.split("\r") if segment]
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(segments) - 1))
        fields = segments[index]
        number = draw(st.sampled_from([1, 2, 3, 4, 7, 9, 10, 11, 12, 15, 18, 5, 3, 8, 19, 20]))
        fields += [""] * (number + 1 - len(fields))
        fields[number] = draw(field_values)
    text = "\r".join("|".join(fields) for fields in segments) + "\r"
    if draw(st.integers(0, 5)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if draw(st.integers(0, 5)) == 0:
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
    return data.replace(END_BYTE, b" ")  # one frame each: FS ends a frame, so one inside would make two


def _corpus_bundle() -> dict[str, Any]:
    return json.loads((CORPUS / "fhir" / "transaction_outpatient_visit.json").read_text(encoding="utf-8"))


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                        field_values, st.sampled_from(["2026-13-45", "048190007788", "urn:uuid:x", "Patient"]))
json_keys = st.one_of(st.sampled_from(
    ["resourceType", "id", "identifier", "value", "system", "name", "family", "given", "birthDate", "entry",
     "resource", "request", "method", "type", "coding", "code", "subject", "reference", "x"]),
    st.text(max_size=8), st.sampled_from(["na\x00me", "\x1b[2J", "é" * 300]))
json_values = st.recursive(json_leaves, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(json_keys, children, max_size=4)), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def fhir_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body): the corpus Bundle or one of its resources with values replaced, or junk."""
    bundle = _corpus_bundle()
    resource: Any = draw(st.sampled_from([bundle, *[entry["resource"] for entry in bundle["entry"]]]))
    path = "/fhir" if resource is bundle else f"/fhir/{resource['resourceType']}"
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(list(_paths(resource))[1:] or [()]))
        if not target:
            break
        parent = resource
        for step in target[:-1]:
            parent = parent[step]
        parent[target[-1]] = draw(json_values)
    body = json.dumps(resource, ensure_ascii=draw(st.booleans())).encode("utf-8")
    choice = draw(st.integers(0, 9))
    if choice == 0:
        body = draw(st.binary(max_size=300))
    elif choice == 1:
        body = body[:draw(st.integers(0, len(body)))]
    elif choice == 2:
        path = draw(st.sampled_from(["/fhir/$validate", "/fhir/Bundle", "/fhir/Patient/$validate", "/fhir/Nope"]))
    headers = {"Content-Type": draw(st.sampled_from(["application/fhir+json", "application/json",
                                                     "application/fhir+json; charset=latin-1", "text/plain"]))}
    if draw(st.booleans()):
        headers["If-None-Exist"] = draw(st.sampled_from(["identifier=urn:hbgw:id:cccd|048190007788", "x" * 500,
                                                         "identifier=\u00e9"]))
    return path, headers, body


def corpus_patient_create(if_none_exist: str) -> tuple[str, dict[str, str], bytes]:
    """A create of the corpus Patient with these conditional-create criteria (a regression input)."""
    patient = next(entry["resource"] for entry in _corpus_bundle()["entry"]
                   if entry["resource"]["resourceType"] == "Patient")
    return ("/fhir/Patient", {"Content-Type": "application/fhir+json", "If-None-Exist": if_none_exist},
            json.dumps(patient).encode("utf-8"))


# ---- the servers ------------------------------------------------------------------------------------

@dataclass
class EntryPoints:
    """The MLLP intake and the FHIR API on free 127.0.0.1 ports, served from a background thread."""

    directory: Path
    mllp_port: int = 0
    http_port: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def crash_sites(self) -> Counter[str]:
        """Where handlers raised instead of answering: `file:line (ExceptionType)` and how often."""
        sites: Counter[str] = Counter()
        for event in self.logs:
            if event.get("event") in ("mllp_handler_failed", "fhir_request_failed"):
                sites[f"{event.get('at', '?')} ({event.get('error', '?')})"] += 1
        return sites

    def log_problems(self) -> list[str]:
        """Log events that carry a control character: raw message bytes reaching the log."""
        return [str(event.get("event")) for event in self.logs if LOG_CONTROL.search(repr_values(event))]

    async def _start(self) -> None:
        mllp = MllpSettings(port=0, max_message_bytes=MAX_MESSAGE_BYTES)
        http = HttpSettings(port=0)
        self._store = await SqliteStore(self.directory / "fuzz.db", PayloadCipher(b"f" * 32)).open()
        metrics = Metrics()
        intake = Hl7Intake(self._store, metrics, mllp, screen)
        self._mllp = MllpServer(intake.store_and_ack, host="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE_BYTES,
                                idle_timeout=30, max_connections=64)
        await self._mllp.start()
        self.mllp_port = self._mllp.port
        app = web.Application(client_max_size=http.max_body_bytes)
        FhirApi(FhirIntake(self._store, metrics, http, validate_fhir), http.max_body_bytes, "fuzz").mount(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.http_port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        await self._mllp.stop()
        await self._runner.cleanup()
        await self._store.close()

    @contextmanager
    def running(self) -> Iterator[EntryPoints]:
        """Serve until the block ends; logs are captured (not printed) into `logs`."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fuzz-servers", daemon=True)
        with capture_logs() as captured:
            self.logs = captured
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._start(), loop).result(60)
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(60)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(30)
                loop.close()


def repr_values(value: Any) -> str:
    """Every text inside a log event, raw (a renderer would escape a control character, not drop it)."""
    if isinstance(value, dict):
        return " ".join(repr_values(item) for item in value.values())
    if isinstance(value, (list, tuple, set)):
        return " ".join(repr_values(item) for item in value)
    return str(value)


# ---- the invariants ---------------------------------------------------------------------------------

def read_frame(sock: socket.socket) -> bytes:
    """One whole MLLP frame from the socket, or AssertionError when the peer closes before it ends."""
    data = b""
    while not data.endswith(END_BLOCK):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the gateway closed the connection without an ACK")
        data += chunk
    return data


def check_mllp(points: EntryPoints, payloads: list[bytes]) -> None:
    """Send the frames on one connection: each gets one ACK naming an acknowledgement code, in order."""
    with socket.create_connection(("127.0.0.1", points.mllp_port), timeout=20) as sock:
        for payload in payloads:
            sock.sendall(START_BLOCK + payload + END_BLOCK)
            frame = read_frame(sock)
            assert frame.startswith(START_BLOCK) and frame.count(END_BLOCK) == 1, "one ACK per frame"
            ack = frame[1:-2]
            assert b"\x00" not in ack, "the ACK echoes a NUL"
            empty_batch = payload[:3] in (b"FHS", b"BHS") and not re.search(rb"(?:^|[\r\n])MSH", payload)
            assert MSA.search(ack) or (empty_batch and EMPTY_BATCH_ANSWER.fullmatch(ack)), \
                "the ACK has no MSA with an acknowledgement code"


def check_fhir(points: EntryPoints, request: tuple[str, dict[str, str], bytes]) -> None:
    """One request, one FHIR answer with an expected status (never a 500)."""
    path, headers, body = request
    connection = http.client.HTTPConnection("127.0.0.1", points.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status in FHIR_STATUSES, f"status {response.status}"
    if answer:
        assert "resourceType" in json.loads(answer), "the answer is not a FHIR resource"


def failure_site(exc: BaseException) -> str:
    """Where a check failed, for the fuzz report."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {type(exc).__name__}: {str(exc)[:80]}"
