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


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throwaway PostgreSQL server for the session, stopped and removed at the end."""
    from tests.pg_cluster import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_dsn(postgres_cluster) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    """Each store test runs on both backends (see tests/store_backends.py)."""
    from tests.store_backends import StoreBackend

    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgresql" else ""
    return StoreBackend(request.param, tmp_path / "gw.db", dsn)
