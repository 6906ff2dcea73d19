"""The signing stage: each message's new documents become signed submissions, in worker processes.

Signing (XML canonicalisation, RSA) is CPU work. It runs in `pipeline.signing_processes` processes beside
the mapping workers, each with its own copy of the facility key loaded from the same settings, so it holds
neither the event loop nor the listener's core. A batch goes to them in one call per process (a run of
neighbouring messages each), not one call per message. With 0 processes, or a hardware token (PKCS#11, whose
session is not shared between processes), it runs in one thread of the gateway process instead.
"""
from __future__ import annotations

import asyncio
import os
import pickle
import traceback
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


def sign_chunk(build: BuildSubmissions, chunk: Sequence[Versions]) -> list[SignResult]:
    """Each message of a chunk signed in turn: one message's failure is its own result, not its neighbours'."""
    results: list[SignResult] = []
    for versions in chunk:
        try:
            results.append(sign_documents(build, versions))
        except Exception as exc:  # noqa: BLE001 - handed back to be judged for this message alone
            results.append(exc)
    return results


def _load_builder(build: BuildSubmissions) -> None:
    """Signing process start-up: keep the builder (it loads the key on first use)."""
    global _worker_build
    _worker_build = build


def _sendable(result: SignResult) -> SignResult:
    """A result as it can cross back to the gateway: an exception keeps the signing process's traceback as a
    note, and one that cannot be pickled and read back (which would break the whole pool) goes as a
    RuntimeError naming it."""
    if not isinstance(result, BaseException):
        return result
    result.add_note("".join(traceback.format_exception(result)).rstrip())
    try:
        pickle.loads(pickle.dumps(result))
    except Exception:  # noqa: BLE001 - any reason it cannot travel
        return RuntimeError(f"{type(result).__name__}: {result}")
    return result


def _sign_chunk_in_worker(chunk: list[Versions]) -> list[SignResult]:
    if _worker_build is None:
        raise RuntimeError("signing process started without a builder")
    return [_sendable(result) for result in sign_chunk(_worker_build, chunk)]


def chunks(indexes: Sequence[int], parts: int) -> list[list[int]]:
    """Indexes split into at most `parts` runs of neighbours, as even as can be (one call per signing process)."""
    size, extra = divmod(len(indexes), max(parts, 1))
    runs, start = [], 0
    for part in range(max(parts, 1)):
        end = start + size + (1 if part < extra else 0)
        if end > start:
            runs.append(list(indexes[start:end]))
        start = end
    return runs


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
        BrokenExecutor, a failure of the surroundings charged to no message; the pool is replaced).

        The messages with documents go in one call per signing process, each a run of neighbours (a document
        and the version it builds on often travel in one call, pickled once): not one call per message."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        runs = chunks([index for index, versions in enumerate(batch) if versions], self._processes)
        futures: list[asyncio.Future[list[SignResult]]] = []
        try:
            for run in runs:
                work: list[Versions] = [list(batch[index]) for index in run]
                if self._processes > 0:
                    futures.append(loop.run_in_executor(executor, _sign_chunk_in_worker, work))
                else:
                    futures.append(loop.run_in_executor(executor, sign_chunk, self._build, work))
        except BrokenExecutor as exc:
            await asyncio.gather(*futures, return_exceptions=True)
            self._replace(executor)
            return [exc] * len(batch)
        answers = await asyncio.gather(*futures, return_exceptions=True)
        results: list[SignResult] = [Signed() for _ in batch]
        for run, answer in zip(runs, answers, strict=True):
            for position, index in enumerate(run):
                results[index] = answer if isinstance(answer, BaseException) else answer[position]
        if any(isinstance(answer, BrokenExecutor) for answer in answers):
            self._replace(executor)
        return results

    def _replace(self, broken: Executor) -> None:
        if broken is not self._executor:
            return
        log.error("signing_worker_died")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
