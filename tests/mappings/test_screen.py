"""The fast acknowledgement-path screen: every rule, terminators, escapes, corpus."""
from __future__ import annotations

import pytest

from mappings.hl7v2 import screen
from tests.mappings.conftest import corpus_text, drop_segment, hl7_files, replace_field

PERSONAL = ("040085012345", "GD4404012345678", "19850214", "NGUYỄN", "040305012399", "19850101")

EXPECTED_CORPUS = {
    "invalid_cccd_mismatch.hl7": [("PID-3", "cccd-birth-mismatch"), ("PID-3", "cccd-birth-mismatch")],
    "invalid_missing_identity.hl7": [("PID-7", "required"), ("PID-3", "required")],
}


@pytest.mark.parametrize("name", hl7_files())
def test_corpus(name: str) -> None:
    issues = screen(corpus_text(name))
    errors = [(i.location, i.code) for i in issues if i.severity == "error"]
    assert errors == EXPECTED_CORPUS.get(name, [])
    warnings = [(i.location, i.code) for i in issues if i.severity == "warning"]
    assert warnings == ([("RXA[1]-20", "invalid-code")] if name.startswith("vxu") else [])
    assert not any(value in i.message for i in issues for value in PERSONAL)


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_segment_terminators(admit: str, terminator: str) -> None:
    assert screen(admit.replace("\r", terminator)) == []
    mismatch = corpus_text("invalid_cccd_mismatch.hl7").replace("\r", terminator)
    assert {i.code for i in screen(mismatch)} == {"cccd-birth-mismatch"}


def test_mllp_framing_and_trailing_blank_lines(admit: str) -> None:
    assert screen("\x0b" + admit + "\r\r\x1c\r") == []


def _pid3(cccd: str = "040085012345", bhyt: str = "GD4404012345678") -> str:
    reps = ["BN26001234^^^BVDKNA^MR"]
    if cccd:
        reps.append(f"{cccd}^^^BCA^NNVNM")
    if bhyt:
        reps.append(f"{bhyt}^^^BHXH^HC")
    return "~".join(reps)


@pytest.mark.parametrize(("segment", "field", "value", "expected"), [
    ("PID", 3, _pid3(), []),
    ("PID", 3, _pid3(bhyt=""), []),
    ("PID", 3, _pid3(cccd=""), []),
    ("PID", 3, "040085012345^^^BCA", []),
    ("PID", 3, "040085012345^^^^NNVNM", []),
    ("PID", 3, "040085012345^^^BCA^NI", []),
    ("PID", 3, "C1234567^^^BCA^PPN~GD4404012345678^^^BHXH^HC", []),
    ("PID", 3, "C1234567^^^BCA^PPN", [("PID-3", "required")]),
    ("PID", 3, "BN26001234^^^BVDKNA^MR", [("PID-3", "required")]),
    ("PID", 3, "", [("PID-3", "required")]),
    ("PID", 3, _pid3(cccd="04008501234"), [("PID-3", "cccd-format")]),
    ("PID", 3, _pid3(cccd="003085012345"), [("PID-3", "cccd-province")]),
    ("PID", 3, _pid3(cccd="040185012345"), [("PID-3", "cccd-birth-mismatch")]),
    ("PID", 3, _pid3(cccd="040084012345"), [("PID-3", "cccd-birth-mismatch")]),
    ("PID", 3, _pid3(bhyt="GD440401234567"), [("PID-3", "bhyt-format")]),
    ("PID", 3, _pid3() + "~040085099999^^^BCA^NNVNM", [("PID-3", "conflicting-identifiers")]),
    ("PID", 3, _pid3() + "~040085012345^^^BCA^NNVNM", []),
    ("PID", 3, _pid3() + "~GD4404099999999^^^BHXH^HC", [("PID-3", "conflicting-identifiers")]),
    ("PID", 5, "", [("PID-5", "required")]),
    ("PID", 5, "^AN", []),
    ("PID", 7, "", [("PID-7", "required")]),
    ("PID", 7, "١٩٨٥٠٢١٤", [("PID-7", "invalid-date")]),
    ("PID", 7, "19850230", [("PID-7", "invalid-date")]),
    ("PID", 7, "1985021", [("PID-7", "invalid-date")]),
    ("PID", 7, "20300101", [("PID-7", "invalid-date")]),
    ("PID", 7, "1985", []),
    ("PID", 7, "198502140830+0700", []),
    ("PID", 8, "", [("PID-8", "required")]),
    ("PID", 8, "X", [("PID-8", "invalid-code")]),
    ("PID", 8, "F", [("PID-3", "cccd-birth-mismatch")]),
    ("PID", 8, "U", []),
    ("PID", 8, "A", []),
    ("PID", 8, "N", []),
    ("PV1", 19, "", [("PV1-19", "required")]),
    ("MSH", 9, "ADT^A99^ADT_A01", [("MSH-9", "unsupported-message-type")]),
    ("MSH", 9, "SIU^S12", [("MSH-9", "unsupported-message-type")]),
    ("MSH", 9, "ADT^A01", []),
    ("MSH", 4, "", [("MSH-4", "required")]),
    ("MSH", 4, "^4000000000123^L", []),
    ("MSH", 7, "", [("MSH-7", "required")]),
    ("MSH", 7, "20261340", [("MSH-7", "required")]),
    ("MSH", 7, "20260312", []),
    ("MSH", 12, "2.3", []),
    ("MSH", 12, "2.8", []),
    ("MSH", 12, "2.9", [("MSH-12", "unsupported-version")]),
    ("MSH", 12, "9.9", [("MSH-12", "unsupported-version")]),
    ("MSH", 10, "C" * 199, []),
    ("MSH", 10, "C" * 200, [("MSH-10", "field-too-long")]),
    ("MSH", 10, "C\x00", [("MSH-10", "control-character")]),
    ("MSH", 18, "UNICODE UTF-8\x00", [("MSH-18", "control-character")]),
    ("PID", 5, "N" * 150 + "^" + "A" * 104, []),
    ("PID", 5, "N" * 150 + "^" + "A" * 105, [("PID-5", "field-too-long")]),
    ("PID", 5, "N" * 255 + "~" + "B" * 255, []),
    ("PID", 5, "NGUYEN\x00^AN", [("PID-5", "control-character")]),
    ("PID", 5, "NGUYEN\\X00\\^AN", [("PID-5", "control-character")]),
    ("PID", 5, "NGUYEN\\X41\\^AN", []),
    ("PID", 5, "NGUYEN\u0085^AN", [("PID-5", "control-character")]),
    ("PID", 5, "NGUYEN\t^AN", []),
    ("PID", 11, "D" * 1024, []),
    ("PID", 11, "D" * 1025, [("PID-11", "field-too-long")]),
    ("PV1", 44, "20260332082500+0700", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "20260312252500+0700", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "20260312082500+1900", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "202603120825", []),
    ("PV1", 44, "20260312", [("PV1-44", "invalid-date")]),
    ("PV1", 45, "2026031214+0700", [("PV1-45", "invalid-date")]),
    ("PV1", 44, "20261399250000", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "20260312082500+1430", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "20260312082500-1401", [("PV1-44", "invalid-date")]),
    ("PV1", 44, "20260312082500+1400", []),
    ("EVN", 2, "20260312082500+1430", [("EVN-2", "invalid-date")]),
    ("EVN", 2, "2026-03-12", [("EVN-2", "invalid-date")]),
    ("OBX", 3, "", [("OBX[1]-3", "required")]),
    ("OBX", 3, "^Nhịp tim", []),
    ("OBX", 14, "20261312", [("OBX[1]-14", "invalid-date")]),
    ("AL1", 3, "", [("AL1[1]-3", "required")]),
    ("DG1", 3, "", [("DG1[1]-3", "required")]),
    ("DG1", 3, "I10^Tăng huyết áp^I10", []),
    ("DG1", 3, "I-10^Tăng huyết áp^I10", [("DG1[1]-3", "icd10-format")]),
    ("DG1", 3, "NOI-01^Mã nội bộ^L", []),
])
def test_field_rules(admit: str, segment: str, field: int, value: str, expected: list[tuple[str, str]]) -> None:
    issues = screen(replace_field(admit, segment, field, value))
    assert [(i.location, i.code) for i in issues] == expected
    assert not any(v in i.message for i in issues for v in PERSONAL)


@pytest.mark.parametrize("extra", ["PID|2||050085012345^^^BCA^NNVNM||X^Y||19850214|M",
                                   "PV1|2|I|||||||||||||||||VV26000999"])
def test_one_patient_and_one_visit_per_message(extra: str) -> None:
    message = corpus_text("oru_r01_lab.hl7") + "\r" + extra
    assert [(i.location, i.code) for i in screen(message)] == [("PID", "multiple-patients")]


@pytest.mark.parametrize(("cut", "owner"), [("PID|1||BN26", "PID"), ("OBX|2|NM|8480-6^Huy", "OBX[2]"),
                                          ("PV1|1|I|NOI-TM", "PV1")])
def test_stray_terminator_inside_a_segment(admit: str, cut: str, owner: str) -> None:
    """A terminator in the middle of a field leaves a piece with no segment name; the owner is named."""
    broken = admit.replace(cut, cut + "\r")
    issues = screen(broken)
    assert (issues[0].location, issues[0].code) == (owner, "segment-split")
    assert [i.code for i in issues].count("segment-split") == 1


def test_unsupported_version_is_only_a_warning(admit: str) -> None:
    issues = screen(replace_field(admit, "MSH", 12, "2.9"))
    assert [i.severity for i in issues] == ["warning"]


@pytest.mark.parametrize("event", ["A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13"])
def test_episode_events_need_visit_number(admit: str, event: str) -> None:
    message = replace_field(admit, "MSH", 9, f"ADT^{event}^ADT_A01")
    assert screen(message) == []
    assert [(i.location, i.code) for i in screen(replace_field(message, "PV1", 19, ""))] == [("PV1-19", "required")]


@pytest.mark.parametrize("event", ["A28", "A31"])
def test_patient_events_do_not_need_visit(admit: str, event: str) -> None:
    message = replace_field(replace_field(admit, "MSH", 9, f"ADT^{event}^ADT_A05"), "PV1", 19, "")
    assert screen(message) == []


@pytest.mark.parametrize(("mrg", "visit", "expected"), [
    ("MRG|BN25000001^^^BVDKNA^MR||||VV26000456", "", []),
    ("MRG|BN25000001^^^BVDKNA^MR", "VV26000456", []),
    ("MRG|BN25000001^^^BVDKNA^MR", "", []),  # a merge concerns the patient: no visit needed (issue 14)
    ("MRG|", "VV26000456", [("MRG-1", "required")]),
    ("", "VV26000456", [("MRG-1", "required")]),
])
def test_merge_needs_the_prior_identifier_not_a_visit(admit: str, mrg: str, visit: str,
                                                expected: list[tuple[str, str]]) -> None:
    message = replace_field(replace_field(admit, "MSH", 9, "ADT^A40^ADT_A39"), "PV1", 19, visit)
    if mrg:
        message += "\r" + mrg
    assert [(i.location, i.code) for i in screen(message)] == expected


@pytest.mark.parametrize(("name", "segment", "expected"), [
    ("oru_r01_lab.hl7", "OBX", [("OBX", "required")]),
    ("mdm_t02_summary.hl7", "TXA", [("TXA", "required")]),
    ("mdm_t02_summary.hl7", "OBX", [("OBX", "required")]),
    ("mdm_t02_summary.hl7", "OBX|1|TX|34105-7", [("OBX-5", "required")]),
    ("vxu_v04_immunization.hl7", "RXA", [("RXA", "required")]),
    ("adt_a01_admit.hl7", "PID", [("PID", "required")]),
])
def test_required_segments(name: str, segment: str, expected: list[tuple[str, str]]) -> None:
    text = corpus_text(name)
    if "|" in segment:
        emptied = replace_field(text, "OBX", 5, "")
        assert [(i.location, i.code) for i in screen(emptied)] == expected
        return
    assert [(i.location, i.code) for i in screen(drop_segment(text, segment))] == expected


@pytest.mark.parametrize(("field", "value", "expected"), [
    (3, "", [("RXA[1]-3", "required")]), (5, "", [("RXA[1]-5", "required")])])
def test_vaccine_fields(field: int, value: str, expected: list[tuple[str, str]]) -> None:
    message = replace_field(corpus_text("vxu_v04_immunization.hl7"), "RXA", field, value)
    assert [(i.location, i.code) for i in screen(message) if i.severity == "error"] == expected


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("II^Loại II^L", "VII^Loại VII^L", [("OBX[10]-5", "invalid-code")]),
    ("KSK-PL^Phân loại sức khỏe^L", "KSK-XX^Khác^L", [("OBX-3", "required")]),
])
def test_health_check_needs_class(old: str, new: str, expected: list[tuple[str, str]]) -> None:
    message = corpus_text("oru_r01_health_check.hl7").replace(old, new)
    assert [(i.location, i.code) for i in screen(message)] == expected


def test_escaped_identifier_is_unescaped(admit: str) -> None:
    escaped = admit.replace("040085012345^^^BCA^NNVNM", "040085012345^^^\\X42\\CA^NNVNM")
    assert screen(escaped) == []
    broken = admit.replace("040085012345^^^BCA", "0400\\F\\85012345^^^BCA")
    assert [i.code for i in screen(broken)] == ["cccd-format"]


def test_three_encoding_characters(admit: str) -> None:
    assert screen(admit.replace("MSH|^~\\&|", "MSH|^~\\|", 1)) == []


def test_custom_delimiters(admit: str) -> None:
    custom = admit.replace("|", "#").replace("MSH#^~\\&", "MSH#^~\\&")
    assert screen(custom) == []


@pytest.mark.parametrize("garbage", ["", "hello", "MSH", "PID|1||x", "MSH|^~", "\x0b\x1c", "MSH|^~\\&|" * 3])
def test_garbage_gives_issues_not_exceptions(garbage: str) -> None:
    issues = screen(garbage)
    assert issues and all(i.severity == "error" for i in issues)


@pytest.mark.parametrize(("event", "discharge", "expected"), [
    ("A03", "20260318143000+0700", []),
    ("A03", "20260312082500+0700", []),
    ("A03", "20260312013000+0000", []),
    ("A03", "20260312012000+0000", [("PV1-45", "discharge-before-admission")]),
    ("A03", "20260312082400+0700", [("PV1-45", "discharge-before-admission")]),
    ("A03", "20241231235900+0700", [("PV1-45", "discharge-before-admission")]),
    ("A08", "202403010900", [("PV1-45", "discharge-before-admission")]),
    ("A13", "20241231235900+0700", []),
])
def test_discharge_not_before_admission(event: str, discharge: str, expected: list[tuple[str, str]]) -> None:
    """Equal times are fine (a visit closed the minute it opened); a discharge before admission is refused."""
    message = replace_field(corpus_text("adt_a03_discharge.hl7"), "MSH", 9, f"ADT^{event}^ADT_A03")
    issues = screen(replace_field(message, "PV1", 45, discharge))
    assert [(i.location, i.code) for i in issues] == expected
    assert not any("2024" in i.message or "2026" in i.message for i in issues)


def _set_obx(message: str, kind: str, value: str) -> str:
    """The message with the first OBX (a heart rate, 8867-4) holding `value` typed `kind`."""
    return replace_field(replace_field(message, "OBX", 2, kind), "OBX", 5, value)


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("NM", "88", []), ("NM", "+88", []), ("NM", "88.", []), ("NM", ".5", []), ("NM", "", []),
    ("NM", "<5.2", []), ("NM", ">100", []), ("NM", ">= 100", []), ("NM", "<=0.5", []),
    ("NM", "abc", [("OBX[1]-5", "invalid-number")]), ("NM", "1,5", [("OBX[1]-5", "invalid-number")]),
    ("NM", "5 mg", [("OBX[1]-5", "invalid-number")]), ("NM", "1e3", [("OBX[1]-5", "invalid-number")]),
    ("NM", "<>5", [("OBX[1]-5", "invalid-number")]), ("NM", "^88", [("OBX[1]-5", "invalid-number")]),
    ("NM", "٨٨", [("OBX[1]-5", "invalid-number")]), ("nm", "abc", [("OBX[1]-5", "invalid-number")]),
    ("NM", "9" * 15 + "." + "9" * 15, [("OBX[1]-5", "implausible-value")]),
    ("NM", "9" * 16, [("OBX[1]-5", "invalid-number")]), ("NM", "9" * 5000, [("OBX[1]-5", "invalid-number")]),
    ("ST", "9" * 5000, []),
    ("SN", "^88", []), ("SN", "<^88", []), ("SN", "=^88", []), ("SN", "88", []), ("SN", "^", []),
    ("SN", "2^-^5", [("OBX[1]-5", "invalid-number")]), ("SN", "^1^:^128", [("OBX[1]-5", "invalid-number")]),
    ("SN", "abc", [("OBX[1]-5", "invalid-number")]), ("SN", "<>^5", [("OBX[1]-5", "invalid-number")]),
    ("ST", "abc", []), ("TX", "abc", []), ("CWE", "abc^Không rõ^L", []),
])
def test_numeric_results_hold_numbers(admit: str, kind: str, value: str, expected: list[tuple[str, str]]) -> None:
    issues = screen(_set_obx(admit, kind, value))
    assert [(i.location, i.code) for i in issues] == expected
    assert not any("abc" in i.message or "128" in i.message for i in issues)


def _set_vital(message: str, code: str, value: str, unit: str) -> str:
    """The message with its first OBX made the vital sign `code` = `value` `unit` (NM)."""
    changed = replace_field(replace_field(message, "OBX", 3, f"{code}^vital^LN"), "OBX", 5, value)
    return replace_field(changed, "OBX", 6, unit)


@pytest.mark.parametrize(("code", "value", "unit", "expected"), [
    ("29463-7", "68", "kg", []), ("29463-7", "500", "kg", []), ("29463-7", "3200", "g", []),
    ("29463-7", "-1", "kg", ["body weight is outside the plausible range 0-500 kg"]),
    ("29463-7", "0", "", ["body weight is outside the plausible range 0-500 kg"]),
    ("29463-7", "500.1", "KG", ["body weight is outside the plausible range 0-500 kg"]),
    ("29463-7", "1200", "[lb_av]", ["body weight is outside the plausible range 0-500 kg"]),
    ("8302-2", "168", "cm", []), ("8302-2", "1.68", "m", []),
    ("8302-2", "0", "cm", ["body height is outside the plausible range 0-300 cm"]),
    ("8302-2", "301", "cm", ["body height is outside the plausible range 0-300 cm"]),
    ("8310-5", "36.8", "Cel", []), ("8310-5", "25", "Cel", []), ("8310-5", "45", "Cel", []),
    ("8310-5", "98.6", "[degF]", []),
    ("8310-5", "368", "Cel", ["body temperature is outside the plausible range 25-45 Cel"]),
    ("8310-5", "24.9", "Cel", ["body temperature is outside the plausible range 25-45 Cel"]),
    ("8310-5", "120", "[degF]", ["body temperature is outside the plausible range 25-45 Cel"]),
    ("8867-4", "0", "/min", []), ("8867-4", "350", "/min", []),
    ("8867-4", "351", "/min", ["heart rate is outside the plausible range 0-350 /min"]),
    ("8867-4", "-5", "/min", ["heart rate is outside the plausible range 0-350 /min"]),
    ("8480-6", "165", "mm[Hg]", []),
    ("8480-6", "401", "mm[Hg]", ["systolic blood pressure is outside the plausible range 0-400 mm[Hg]"]),
    ("8462-4", "-1", "mmHg", ["diastolic blood pressure is outside the plausible range 0-400 mm[Hg]"]),
    ("8480-6", "40", "kPa", []), ("2345-7", "-1", "mmol/L", []),
])
def test_vital_signs_must_be_physically_possible(admit: str, code: str, value: str, unit: str,
                                                 expected: list[str]) -> None:
    """Out of range is refused at OBX-5; the message names the range and never the value."""
    issues = screen(_set_vital(admit, code, value, unit))
    assert [(i.location, i.code) for i in issues] == [("OBX[1]-5", "implausible-value")] * len(expected)
    assert [i.message for i in issues] == [f"OBX[1]-5 {why}" for why in expected]


def test_a_vital_sign_typed_st_with_a_unit_is_judged_too(admit: str) -> None:
    """The mapping sends a number with a unit as a Quantity whatever OBX-2 says, so screen judges it alike."""
    message = replace_field(_set_vital(admit, "29463-7", "680", "kg"), "OBX", 2, "ST")
    assert [(i.location, i.code) for i in screen(message)] == [("OBX[1]-5", "implausible-value")]
    assert [(i.location, i.code) for i in screen(replace_field(message, "OBX", 6, ""))] == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("||72|/min|", "||720|/min|", [("OBX[6]-5", "implausible-value")]),
    ("|NM|29463-7^Cân nặng^LN||52|", "|NM|29463-7^Cân nặng^LN||năm hai|", [("OBX[2]-5", "invalid-number")]),
    ("||Bình thường||||||F|||\rOBX|10|", "||Bình thường||||||F|||20261301\rOBX|10|",
     [("OBX[9]-14", "invalid-date")]),
    ("II^Loại II^L", "", [("OBX[10]-5", "invalid-code")]),
])
def test_a_repeating_segment_is_named_with_its_occurrence(old: str, new: str, expected: list[tuple[str, str]]) -> None:
    """OBX[n]-f names the n-th OBX of the message, so the sender finds the 10th result, not the first."""
    message = corpus_text("oru_r01_health_check.hl7")
    assert old in message
    assert [(i.location, i.code) for i in screen(message.replace(old, new))] == expected
