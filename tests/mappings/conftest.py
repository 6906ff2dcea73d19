"""Shared fixtures: the corpus beside the repository and message builders for edge cases."""
from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def corpus_text(name: str) -> str:
    """A corpus HL7 file exactly as sent (\\r terminators kept)."""
    with open(CORPUS / "hl7v2" / name, encoding="utf-8", newline="") as handle:
        return handle.read()


def hl7_files() -> list[str]:
    files = sorted(p.name for p in (CORPUS / "hl7v2").glob("*.hl7"))
    assert files, f"corpus not found at {CORPUS}"
    return files


def replace_field(message: str, segment: str, field: int, value: str) -> str:
    """The message with one field of the first `segment` replaced (MSH numbering honoured)."""
    lines = message.split("\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            parts = line.split("|")
            index = field - 1 if segment == "MSH" else field
            parts += [""] * (index + 1 - len(parts))
            parts[index] = value
            lines[i] = "|".join(parts)
            break
    return "\r".join(lines)


def drop_segment(message: str, segment: str) -> str:
    return "\r".join(line for line in message.split("\r") if not line.startswith(segment + "|"))


@pytest.fixture
def admit() -> str:
    return corpus_text("adt_a01_admit.hl7")
