"""What the QĐ 1551/2062 form of an ORU^R01 health check needs, read from the ER7 text on the ACK path.

The same elements, derivations and required lists as the form builder (mappings/checkup), so a health
check acknowledged AA is never refused later for a missing element the listener could have seen.
"""
from __future__ import annotations

from mappings.checkup import facts as reading
from mappings.checkup import forms
from mappings.hl7v2.er7 import Er7Message, component
from mappings.model import Issue
from mappings.vn import codes

LOCATION = {"HO_TEN": "PID-5", "NGAY_SINH": "PID-7", "GIOI_TINH": "PID-8", "MA_DAN_TOC": "PID-22",
            "SO_CCCD": "PID-3", "DIA_CHI": "PID-11", "NGAY_VAO": "PV1-44", "DIEN_THOAI": "PID-13"}
HINT = {"NGAY_VAO": "PV1-44 (or OBR-7) exam time", "SO_CCCD": "PID-3 CCCD (type NNVNM)",
        "HUYET_AP": "OBX-3 8480-6 and 8462-4 (LOINC) or HBGW-KSK-HUYET_AP",
        "KET_LUAN_LOAI_SUC_KHOE": "OBX-3 KSK-PL health class or KSK-KL conclusion"}


def _twelve(hl7_time: str) -> str:
    digits = hl7_time.split("+")[0].split("-")[0].split(".")[0]
    return (digits + "0" * 12)[:12] if len(digits) >= 8 and digits.isdigit() else ""


def _present(hl7_time: str) -> str:
    """The time as yyyyMMddHHmm; an impossible one is kept as sent (rules.py reports it as invalid-date)."""
    return _twelve(hl7_time) or hl7_time


def _hint(element: str) -> str:
    if element in HINT or element in LOCATION:
        return HINT.get(element, LOCATION.get(element, ""))
    table = forms.codes()
    loinc = [code for code, targets in table["loinc"].items() if element in targets]
    local = table["local_prefix"] + element
    return f"OBX-3 {loinc[0]} (LOINC) or {local}" if loinc else f"OBX-3 {local}"


def read(msg: Er7Message, cccd: str) -> reading.Facts:
    """The form elements an ORU^R01 health check carries (presence is what matters on this path)."""
    d = msg.delimiters
    found = reading.Facts()
    pid, pv1 = msg.first("PID"), msg.first("PV1")
    values = found.values
    if pid is not None:
        given = {"HO_TEN": pid.field(5).strip(d.component + d.subcomponent + d.repetition),
                 "NGAY_SINH": _present(component(pid.field(7), 1, d)), "GIOI_TINH": component(pid.field(8), 1, d),
                 "MA_DAN_TOC": component(pid.field(22), 1, d), "SO_CCCD": cccd,
                 "DIA_CHI": pid.field(11).strip(d.component + d.subcomponent + d.repetition)}
        values.update({k: v for k, v in given.items() if v})
    orders = msg.all("OBR")
    exam = (component(pv1.field(44), 1, d) if pv1 else "") or next(
        (component(obr.field(7), 1, d) for obr in orders if component(obr.field(7), 1, d)), "")
    if exam:
        values["NGAY_VAO"] = _present(exam)
    found.driver = any(forms.is_driver_order(component(obr.field(4), 1, d)) for obr in orders)
    for obx in msg.all("OBX"):
        elements = forms.elements_of_code(component(obx.field(3), 1, d))
        value = component(obx.field(5), 1, d) if elements else ""
        if elements == ("PHAN_LOAI_SK",):
            value = str(codes.health_class(value) or "")
        parts = [value] if len(elements) == 1 else forms.split_values(value, len(elements))
        for element, part in zip(elements, parts, strict=False):
            if part:
                values.setdefault(element, part)
    return found


def form_issues(msg: Er7Message, cccd: str) -> tuple[str, list[Issue]]:
    """The form this health check needs and the elements it lacks that only the sender can give."""
    found = read(msg, cccd)
    name = found.form()
    reading.derive(found, name)
    return name, [Issue(LOCATION.get(element, "OBX-3"), "required",
                        f"the {name} health-check form (QĐ 1551/2062) requires {element}: send {_hint(element)}")
                  for element in reading.missing(name, found.values, sender_only=True) if element != "PHAN_LOAI_SK"]
