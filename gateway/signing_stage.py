"""The signing stage: each message's new documents become signed submissions, in worker processes.

Signing (XML canonicalisation, RSA) is CPU work. It runs in `pipeline.signing_processes` processes beside
the mapping workers, each with its own copy of the facility key loaded from the same settings, so it holds
neither the event loop nor the listener's core. With 0 processes, or a hardware token (PKCS#11, whose
session is not shared between processes), it runs in one thread of the gateway process instead.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from adapters.portal.base import Submission
from gateway.logs import get_logger
from gateway.store import Parked
from gateway.submissions import DocumentParked
from gateway.workers import worker_pool
from mappings.model import Document

log = get_logger(__name__)

BuildSubmissions = Callable[[Document, Document | None], list[Submission]]  # (new version, the one it builds on)
Versions = Sequence[tuple[Document, Document | None]]  # a message's new versions, each with the one before it


@dataclass(frozen=True, slots=True)
class Signed:
    """A message's submissions, and its documents whose files wait (a site mapping, a missing element)."""

    submissions: list[Submission] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)


SignResult = Signed | BaseException  # a message's signed submissions, or why they could not be built

_worker_build: BuildSubmissions | None = None  # in a signing process: the builder it loaded at start


def sign_documents(build: BuildSubmissions, versions: Versions) -> Signed:
    """Every submission of one message's new document versions, in document order; a version whose files
    wait is parked, what its other channels built (a check-in) still goes."""
    signed = Signed()
    for document, previous in versions:
        try:
            signed.submissions.extend(build(document, previous))
        except DocumentParked as wait:
            signed.submissions.extend(wait.ready)
            signed.parked.append(Parked(document.document_id, document.version, wait.channel, wait.codes))
    return signed


def _load_builder(build: BuildSubmissions) -> None:
    """Signing process start-up: keep the builder (it loads the key on first use)."""
    global _worker_build
    _worker_build = build


def _sign_in_worker(versions: Versions) -> Signed:
    if _worker_build is None:
        raise RuntimeError("signing process started without a builder")
    return sign_documents(_worker_build, versions)


class SigningStage:
    """Signs the documents of a batch of messages side by side; start() and stop() around use."""

    def __init__(self, build: BuildSubmissions, processes: int) -> None:
        self._build = build
        self._processes = processes
        self._executor = self._new_executor()

    def _new_executor(self) -> Executor:
        if self._processes <= 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="signing")
        return worker_pool(self._processes, "hbgw-sign", _load_builder, (self._build,))

    def start(self) -> None:
        """Start the signing processes now, not when the first document waits on them."""
        if self._processes > 0:
            self._executor.submit(os.getpid)

    def stop(self) -> None:
        """Let the processes go; what they were signing is signed again from the store after a restart."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def sign(self, batch: Sequence[Versions]) -> list[SignResult]:
        """Each message's submissions, or the exception that stopped them (a signing process that died:
        BrokenExecutor, a failure of the surroundings charged to no message; the pool is replaced)."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        futures: list[asyncio.Future[Signed]] = []
        try:
            for versions in batch:
                if not versions:
                    futures.append(_done(Signed()))
                elif self._processes > 0:
                    futures.append(loop.run_in_executor(executor, _sign_in_worker, list(versions)))
                else:
                    futures.append(loop.run_in_executor(executor, sign_documents, self._build, list(versions)))
        except BrokenExecutor as exc:
            await asyncio.gather(*futures, return_exceptions=True)
            self._replace(executor)
            return [exc] * len(batch)
        results: list[SignResult] = list(await asyncio.gather(*futures, return_exceptions=True))
        if any(isinstance(result, BrokenExecutor) for result in results):
            self._replace(executor)
        return results

    def _replace(self, broken: Executor) -> None:
        if broken is not self._executor:
            return
        log.error("signing_worker_died")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()


def _done(value: Signed) -> asyncio.Future[Signed]:
    future: asyncio.Future[Signed] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
