"""Shared fixtures: the sample corpus beside the repository, a facility signing key, and helpers for real sockets."""
from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.config import SigningSettings
from gateway.signing import Signer, load_signer
from gateway.signing.sources import generate_self_signed

if TYPE_CHECKING:
    from tests.adapters.test_fhir_api import RunningApi

# The suite starts a few hundred Python processes (gateways, their workers, CLI commands): with
# PYTHONDONTWRITEBYTECODE set, each compiled the project's sources again and pytest rewrote every test
# module again in each worker. Caches go to the (git-ignored) __pycache__ folders; set before the workers start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

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


# Files run longest first, so that `pytest -n 2 --dist loadfile` (pyproject.toml) hands the two kill -9 soaks
# to different workers at the start and ends on short unit-test files that fill both workers evenly.
FIRST = ("tests/e2e/test_kill9_two_nodes.py", "tests/e2e/test_kill9.py")
SUBPROCESS_DIRS = ("tests/e2e/", "tests/deploy/")  # each test starts gateways, Prometheus, browsers


def _file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path in FIRST:
        return FIRST.index(path)
    return len(FIRST) + (0 if path.startswith(SUBPROCESS_DIRS) else 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order files by how long they are expected to take (stable: each file keeps its own order)."""
    items.sort(key=_file_rank)


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


@pytest.fixture(scope="session")
def signer_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A valid facility certificate and key as PEM files, made once per session."""
    directory = tmp_path_factory.mktemp("facility")
    now = datetime.now(UTC)
    certificate, key = generate_self_signed("Benh vien Demo", now - timedelta(days=1), now + timedelta(days=365))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def signer(signer_files: tuple[Path, Path]) -> Signer:
    """The facility's signer over those files."""
    cert_path, key_path = signer_files
    return load_signer(SigningSettings(source="pem", cert_file=cert_path, key_file=key_path))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    """The FHIR API over real HTTP on a fresh store (see tests/adapters/test_fhir_api.py)."""
    from tests.adapters.test_fhir_api import running_fhir_api

    async with running_fhir_api(tmp_path) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for the test."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session
