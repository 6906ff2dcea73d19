"""Shared fixtures: the sample corpus beside the repository, and small helpers for real sockets."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_hl7(name: str) -> str:
    """A corpus HL7 v2 message as text with \\r segment terminators."""
    path = CORPUS / "hl7v2" / name
    if not path.exists():
        raise FileNotFoundError(f"sample corpus not found at {CORPUS}: the repository expects ../shared beside it")
    return path.read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def corpus() -> Path:
    return CORPUS
