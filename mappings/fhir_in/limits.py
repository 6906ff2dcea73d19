"""What no FHIR string may carry (control characters) and the national lengths of names and addresses.

FHIR strings allow only visible characters and whitespace; a NUL or an escape sequence is never data. Name
and address lengths are the national formats' (mappings/vn/data/field_lengths.json): a 1 MB name is
refused at the API instead of by the portal a day later.
"""
from __future__ import annotations

import re
from typing import Any

from mappings.model import Issue
from mappings.vn.lengths import fhir_element_lengths

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # TAB, LF and CR are whitespace in FHIR
MAX_ISSUES = 20
ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # others are no FHIR element (validation names them)
_PARTS = {"name": ("prefix", "given", "family", "suffix"), "address": ("line", "ward", "district", "city", "state")}


def _text_of(element: dict[str, Any], parts: tuple[str, ...]) -> str:
    """A HumanName's or Address's text, else its parts joined as the national record would show them."""
    if isinstance(element.get("text"), str):
        return str(element["text"])
    words: list[str] = []
    for part in parts:
        value = element.get(part)
        words += [v for v in value if isinstance(v, str)] if isinstance(value, list) else \
            [value] if isinstance(value, str) else []
    return " ".join(words)


def _length_issues(resource: dict[str, Any], path: str, limits: dict[str, int]) -> list[Issue]:
    issues = []
    for element, parts in _PARTS.items():
        limit = limits.get(f"{resource.get('resourceType')}.{element}")
        values = resource.get(element)
        if limit is None or not isinstance(values, list):
            continue
        for index, value in enumerate(values):
            if isinstance(value, dict) and len(_text_of(value, parts)) > limit:
                location = f"{path}.{element}[{index}]"
                issues.append(Issue(location, "field-too-long",
                                    f"{location} is longer than the {limit} characters the national format allows"))
    return issues


def limit_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every string with a control character and every name or address over its national length, by path."""
    issues: list[Issue] = []
    limits = fhir_element_lengths()
    root = resource.get("resourceType")
    pending: list[tuple[str, Any]] = [(root if isinstance(root, str) and ELEMENT_NAME.fullmatch(root) else "$this",
                                       resource)]
    while pending and len(issues) < MAX_ISSUES:
        path, value = pending.pop()
        if isinstance(value, str):
            if CONTROL.search(value):
                issues.append(Issue(path, "control-character",
                                    f"{path} holds a control character (such as NUL), which no FHIR string may carry"))
        elif isinstance(value, dict):
            if isinstance(value.get("resourceType"), str):
                issues += _length_issues(value, path, limits)
            for key, item in reversed(value.items()):
                if ELEMENT_NAME.fullmatch(key):
                    pending.append((f"{path}.{key}", item))
                elif CONTROL.search(key):  # named at its parent: the key itself must not reach a log
                    issues.append(Issue(path, "control-character", f"{path} has an element name with a control"
                                                                   " character"))
        elif isinstance(value, list):
            pending += [(f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value)))]
    return issues[:MAX_ISSUES]
