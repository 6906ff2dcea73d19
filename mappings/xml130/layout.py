"""The XML 130 field lists (layouts.json): element order, types and sizes, and the check run before signing."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from mappings.model import Issue

XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
NUMBER = re.compile(r"-?(\d+)(?:\.(\d+))?", re.ASCII)
DATE_PREFIXES = ("NGAY_", "GT_THE_", "THOI_DIEM", "THOIGIAN_", "NGOAITRU_")
NOT_DATES = frozenset({"NGAY_TAI_KHAM"})  # a ";"-separated list of dates, C50


@dataclass(frozen=True, slots=True)
class Field:
    """One element of a table: C (string, at most `size` characters, 0 no limit) or N (number)."""

    name: str
    kind: str
    size: int
    decimals: int = 0

    @property
    def is_date(self) -> bool:
        return self.kind == "C" and self.size in (8, 12) and self.name.startswith(DATE_PREFIXES) \
            and self.name not in NOT_DATES


@cache
def layouts() -> dict[str, Any]:
    """Every table's tags, required elements and fields, as kept in layouts.json with their sources."""
    text = resources.files("mappings.xml130").joinpath("layouts.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def fields(table: str) -> tuple[Field, ...]:
    """The fields of one table, in element order."""
    return tuple(Field(*spec) for spec in layouts()[table]["fields"])


def field_names(table: str) -> list[str]:
    """The element names of one table, in order."""
    return [field.name for field in fields(table)]


def escaped(text: str) -> str:
    """Character data written as ElementTree writes it (&, < and > escaped), for the same bytes, faster."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def element(tag: str, content: str) -> str:
    """One element around escaped text or its serialised children; empty as ElementTree writes it (`<TAG />`)."""
    return f"<{tag}>{content}</{tag}>" if content else f"<{tag} />"


def document_bytes(root: str) -> bytes:
    """A serialised root element as the UTF-8 document the portal receives, with its XML declaration."""
    return XML_DECLARATION + root.encode("utf-8", "xmlcharrefreplace")


def field_elements(names: tuple[str, ...] | list[str], row: dict[str, str]) -> str:
    """A row's elements in layout order, every one present (empty when unknown), characters XML forbids dropped."""
    return "".join(element(name, escaped(XML_INVALID.sub("", value))) if (value := row.get(name)) else f"<{name} />"
                   for name in names)


def render(table: str, rows: list[dict[str, str]]) -> bytes:
    """One table as UTF-8 XML, every element of the layout present and in order (empty when unknown)."""
    layout = layouts()[table]
    names = field_names(table)
    cells = [field_elements(names, row) for row in rows]
    body = "".join(element(layout["row"], cell) for cell in cells) if layout["row"] else "".join(cells)
    return document_bytes(element(layout["root"], element(layout["list"], body) if layout["list"] else body))


def _value_issue(field: Field, value: str, where: str) -> Issue | None:
    if field.kind == "N":
        match = NUMBER.fullmatch(value)
        if match is None:
            return Issue(where, "invalid-number", f"{where} is not a number")
        digits = len(match[1]) + len(match[2] or "")
        if digits > field.size or len(match[2] or "") > field.decimals:
            return Issue(where, "too-long", f"{where} has more than {field.size} digits or {field.decimals} decimals")
        return None
    if field.size and len(value) > field.size:
        return Issue(where, "too-long", f"{where} is longer than {field.size} characters")
    if field.is_date and not (value.isdigit() and len(value) == field.size):
        return Issue(where, "invalid-date", f"{where} must be {field.size} digits (yyyyMMdd[HHmm])")
    return None


def table_issues(table: str, rows: list[dict[str, str]]) -> list[Issue]:
    """Types, sizes and required elements of one table's rows, located as `XML2[3].SO_LUONG` (row 3)."""
    known = {field.name for field in fields(table)}
    required = set(layouts()[table]["required"])
    issues: list[Issue] = []
    for number, row in enumerate(rows, start=1):
        prefix = f"{table}[{number}]" if layouts()[table]["row"] else table
        issues += [Issue(f"{prefix}.{name}", "unknown-element", f"{name} is not an element of {table}")
                   for name in row if name not in known]
        for field in fields(table):
            if not (value := row.get(field.name, "")):
                if field.name in required:
                    where = f"{prefix}.{field.name}"
                    issues.append(Issue(where, "required", f"{where} must not be blank"))
                continue
            if (issue := _value_issue(field, value, f"{prefix}.{field.name}")) is not None:
                issues.append(issue)
    return issues
