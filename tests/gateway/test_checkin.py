"""XML0 check-ins: due at the first cost of a visit and of an inpatient stay, signed, valid for the emulator,
queued before the episode's files; none for an emergency."""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from lxml import etree

from adapters.portal.bhxh import filed_as, read_signed_document
from adapters.portal.emulator.validate import check_checkin
from gateway.channels import build_submissions
from gateway.config import (
    BhxhChannelSettings,
    PortalSettings,
)
from gateway.signing import Signer
from gateway.store import EncodedDocument, Inbound, MappingOutcome
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import Document
from mappings.xml130 import checkin
from mappings.xml130.lifecycle import claim_ready
from tests.conftest import CORPUS, corpus_hl7
from tests.demo_site import FACILITY, SITE
from tests.mappings.conftest import replace_field
from tests.store_backends import StoreBackend

NOW = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)


def versions(*messages: str) -> list[Document]:
    """Each version of the episode the messages build, in order."""
    built: list[Document] = []
    for message in messages:
        fragment = map_message(message).fragments[0]
        built.append(assemble(built[-1] if built else None, fragment))
    return built


def row(signed: bytes) -> dict[str, str]:
    root = etree.fromstring(signed)
    return {child.tag: child.text or "" for child in root.find("DSACH_TRANG_THAI_KCB/TRANG_THAI_KCB")}


def test_an_admission_without_any_cost_yet_sends_no_check_in(signer: Signer) -> None:
    [admitted] = versions(corpus_hl7("adt_a01_admit.hl7"))
    assert checkin.due_stages(None, admitted, FACILITY) == []
    # nor files: not finished
    assert build_submissions(admitted, FACILITY, signer, PortalSettings(), now=NOW, site=SITE) == []


def test_the_first_cost_of_an_inpatient_stay_sends_one_signed_check_in_before_the_files(signer: Signer) -> None:
    admitted, with_labs = versions(corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"))
    every_version = PortalSettings(bhxh=BhxhChannelSettings(send_files="every_version"))
    first, files = build_submissions(with_labs, FACILITY, signer, every_version, now=NOW, previous=admitted, site=SITE)
    assert first.idempotency_key == f"{with_labs.document_id}:v{with_labs.version}"
    assert (first.channel, files.channel) == ("bhxh_checkin", "bhxh_xml130")  # files never supersede it
    assert first.document_id == files.document_id
    assert files.idempotency_key == with_labs.idempotency_key
    # what the portal files each under travels with it, and is what was signed
    assert (first.file_type, first.facility_code) == ("0", "40001")
    assert (files.file_type, files.facility_code) == ("130", "40001")
    assert (read_signed_document(first.body), read_signed_document(files.body)) == (filed_as(first), filed_as(files))
    checked = check_checkin(first.body, signer.certificate_pem)
    assert (checked["facility"], checked["episodes"]) == ("40001", [with_labs.document_id])
    values = row(first.body)
    assert (values["MA_LK"], values["MA_CSKCB"], values["STT"]) == (with_labs.document_id, "40001", "1")
    assert values["NGAY_VAO_NOI_TRU"] == "202603120825"  # PV1-44
    assert (values["MA_DICH_VU"], values["NGAY_YL"]) == ("24323-8", "202603120900")
    assert values["MA_THUOC"] == values["MA_VAT_TU"] == ""


def test_a_check_in_is_due_once_per_stage(signer: Signer) -> None:
    _, with_labs, discharged = versions(corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"),
                                        corpus_hl7("adt_a03_discharge.hl7"))
    assert checkin.due_stages(with_labs, discharged, FACILITY) == []
    portal = PortalSettings(bhxh=BhxhChannelSettings(claim_delay_seconds=600))
    [files] = build_submissions(discharged, FACILITY, signer, portal, now=NOW, previous=with_labs, site=SITE)
    assert files.idempotency_key == discharged.idempotency_key
    assert files.not_before == NOW.timestamp() + 600  # held for late charges


def test_an_outpatient_visit_checks_in_with_its_first_drug(signer: Signer) -> None:
    bundle = json.loads((CORPUS / "fhir" / "transaction_outpatient_visit.json").read_text(encoding="utf-8"))
    visit = assemble(None, map_fhir(bundle).fragments[0])
    assert checkin.due_stages(None, visit, FACILITY) == [checkin.VISIT]
    first, files = build_submissions(visit, FACILITY, signer, PortalSettings(), now=NOW, site=SITE)
    assert files.idempotency_key == visit.idempotency_key  # the visit is finished: its files follow
    values = row(first.body)
    assert (first.channel, first.idempotency_key) == ("bhxh_checkin", visit.idempotency_key)
    assert values["TEN_THUOC"].startswith("Paracetamol") and not values["MA_DICH_VU"]
    assert values["NGAY_YL"] == "202604020000"
    assert values["NGAY_VAO_NOI_TRU"] == ""


def test_files_wait_while_the_stay_is_open_and_a_reopened_stay_waits_again(signer: Signer) -> None:
    reopen = replace_field(corpus_hl7("adt_a03_discharge.hl7").replace("ADT^A03^ADT_A03", "ADT^A13^ADT_A01"),
                           "EVN", 1, "A13")
    admitted, with_labs, discharged, reopened = versions(
        corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"), corpus_hl7("adt_a03_discharge.hl7"),
        reopen)
    assert [claim_ready(version) for version in (admitted, with_labs, discharged, reopened)] == [
        False, False, True, False]


def test_an_emergency_sends_no_check_in() -> None:
    emergency = [replace_field(corpus_hl7(name), "PV1", 2, "E") for name in ("adt_a01_admit.hl7", "oru_r01_lab.hl7")]
    admitted, with_labs = versions(*emergency)
    assert checkin.due_stages(admitted, with_labs, FACILITY) == []


def test_check_ins_can_be_turned_off(signer: Signer) -> None:
    admitted, with_labs = versions(corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"))
    portal = PortalSettings(bhxh=BhxhChannelSettings(checkin_enabled=False, send_files="every_version"))
    submissions = build_submissions(with_labs, FACILITY, signer, portal, now=NOW, previous=admitted, site=SITE)
    assert [item.idempotency_key for item in submissions] == [with_labs.idempotency_key]


def test_a_reopened_stay_withdraws_its_files_still_held_for_late_charges(signer: Signer) -> None:
    reopen = replace_field(corpus_hl7("adt_a03_discharge.hl7").replace("ADT^A03^ADT_A03", "ADT^A13^ADT_A01"),
                           "EVN", 1, "A13")
    _, with_labs, discharged, reopened = versions(
        corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"), corpus_hl7("adt_a03_discharge.hl7"),
        reopen)
    assert build_submissions(with_labs, FACILITY, signer, PortalSettings(), now=NOW, previous=None,
                             site=SITE)[0].channel \
        == "bhxh_checkin"  # an open stay: a check-in, no withdrawal
    [withdrawal] = build_submissions(reopened, FACILITY, signer, PortalSettings(), now=NOW, previous=discharged,
                                     site=SITE)
    assert (withdrawal.channel, withdrawal.version, withdrawal.withdraws) == ("bhxh_xml130", reopened.version, True)


async def test_the_store_drops_held_files_a_newer_version_withdraws(signer: Signer, backend: StoreBackend) -> None:
    reopen = replace_field(corpus_hl7("adt_a03_discharge.hl7").replace("ADT^A03^ADT_A03", "ADT^A13^ADT_A01"),
                           "EVN", 1, "A13")
    _, with_labs, discharged, reopened = versions(
        corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("oru_r01_lab.hl7"), corpus_hl7("adt_a03_discharge.hl7"),
        reopen)
    portal = PortalSettings(bhxh=BhxhChannelSettings(claim_delay_seconds=3600))
    store = await backend.open(key=os.urandom(32))
    try:
        ids = [(await store.store_inbound(Inbound("mllp", "HIS", f"C{n}", "ADT", f"c{n}", b"x", b"AA"))).message_id
               for n in range(2)]
        held = build_submissions(discharged, FACILITY, signer, portal, now=datetime.now(UTC),
                                 previous=with_labs, site=SITE)
        await store.finish_messages([MappingOutcome(ids[0], [EncodedDocument.of(discharged)], held)])
        assert await store.claim_submissions(5) == []  # held for late charges
        withdrawal = build_submissions(reopened, FACILITY, signer, portal, previous=discharged, site=SITE)
        await store.finish_messages([MappingOutcome(ids[1], [EncodedDocument.of(reopened)], withdrawal)])
        depths = await store.queue_depths()
        assert (depths.get(("outbox", "pending"), 0), depths.get(("outbox", "superseded"))) == (0, 1)
    finally:
        await store.close()
