"""The assemble-and-sign step: each message's fragments become new document versions, signed submissions and
bundles encoded as the store keeps them, in worker processes (hbgw-sign).

Assembling (mappings.document.assemble), signing (XML canonicalisation, RSA) and encoding each new bundle
(JSON) are CPU work. They run in `pipeline.signing_processes` processes beside the mapping workers, each
with its own copy of the facility key loaded from the same settings, so they hold neither the event loop
that answers every acknowledgement nor the listener's core. Only what the store needs comes back: each new
version's keys and encoded bundle, the signed bodies, the versions whose files wait.

Order: a message builds on the newest version of each of its documents, the committed one or the one built
by an earlier message of the batch. Messages that share a document, directly or through a chain of shared
documents, form a group; a group goes to one call, in batch order. Groups are spread over the processes,
one call per process per batch, balanced by messages. With 0 processes, or a hardware token (PKCS#11, whose
session is not shared between processes), the same functions run in one thread of the gateway process.
"""
from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from adapters.portal.base import Submission
from gateway.logs import get_logger
from gateway.store import EncodedDocument, Parked
from gateway.submissions import DocumentParked
from gateway.workers import portable, worker_pool
from mappings.document import assemble
from mappings.model import Document, Fragment

log = get_logger(__name__)

BuildSubmissions = Callable[[Document, Document | None], list[Submission]]  # (new version, the one it builds on)
Fragments = Sequence[Fragment]  # one message's fragments, in the order its mapping gave them


@dataclass(frozen=True, slots=True)
class Signed:
    """A message's new document versions as the store keeps them, their submissions, and the versions whose
    files wait (a site mapping, a missing element)."""

    documents: list[EncodedDocument] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)


SignResult = Signed | BaseException  # a message's signed versions, or why they could not be assembled or built


@dataclass(frozen=True, slots=True)
class Prepared:
    """One message after the assemble-and-sign step: the documents it built a new version of (the later
    messages of its group built on them) and its result. A message whose assembly failed built nothing."""

    built: frozenset[str] = frozenset()
    result: SignResult = field(default_factory=Signed)


@dataclass(frozen=True, slots=True)
class Call:
    """What one signing call gets: its messages' fragments in batch order, and the committed versions of
    their documents (the newest stored one of each that exists, as stored: decoded here, not in the gateway)."""

    messages: list[Fragments]
    committed: dict[str, EncodedDocument]


_worker_build: BuildSubmissions | None = None  # in a signing process: the builder it loaded at start


class Newest:
    """The newest version of each document of a call: one an earlier message of the call built, else the
    committed one (decoded when first needed, so a bundle that does not decode fails only its messages)."""

    def __init__(self, committed: Mapping[str, EncodedDocument]) -> None:
        self.built: dict[str, Document] = {}
        self._committed = committed
        self._decoded: dict[str, Document] = {}

    def of(self, document_id: str) -> Document | None:
        """The version a message of the call builds on, if the document has one."""
        if document_id in self.built:
            return self.built[document_id]
        if document_id not in self._decoded and document_id in self._committed:
            self._decoded[document_id] = self._committed[document_id].decoded()
        return self._decoded.get(document_id)


def assemble_message(fragments: Fragments, newest: Newest) -> tuple[list[Document], dict[str, Document | None]]:
    """A message's new versions, each fragment on the newest version of its document (one this message
    built, one an earlier message built, or the committed one), and the version each document had before."""
    documents: dict[str, Document] = {}
    before: dict[str, Document | None] = {}
    for fragment in fragments:
        key = fragment.document_id
        previous = documents.get(key) or newest.of(key)
        before.setdefault(key, previous)
        documents[key] = assemble(previous, fragment)
    return list(documents.values()), before


def sign_documents(build: BuildSubmissions, documents: Sequence[Document],
                   before: Mapping[str, Document | None]) -> Signed:
    """Every submission of one message's new versions, in document order, and each version encoded; a
    version whose files wait is parked, what its other channels built (a check-in) still goes."""
    signed = Signed()
    for document in documents:
        try:
            signed.submissions.extend(build(document, before[document.document_id]))
        except DocumentParked as wait:
            signed.submissions.extend(wait.ready)
            signed.parked.append(Parked(document.document_id, document.version, wait.channel, wait.codes))
        signed.documents.append(EncodedDocument.of(document))
    return signed


def prepare_call(build: BuildSubmissions, call: Call) -> list[Prepared]:
    """Each message of a call in turn, on what the ones before it built. A message's failure is its own
    result, not its neighbours'; one whose assembly failed leaves nothing for the later ones to build on."""
    newest = Newest(call.committed)
    results: list[Prepared] = []
    for fragments in call.messages:
        try:
            documents, before = assemble_message(fragments, newest)
        except Exception as exc:  # noqa: BLE001 - a bug met by this message's data: charged to it alone
            results.append(Prepared(result=exc))
            continue
        newest.built.update((document.document_id, document) for document in documents)
        result: SignResult
        try:
            result = sign_documents(build, documents, before)
        except Exception as exc:  # noqa: BLE001 - handed back to be judged for this message alone
            result = exc
        results.append(Prepared(frozenset(before), result))
    return results


def _load_builder(build: BuildSubmissions) -> None:
    """Signing process start-up: keep the builder (it loads the key on first use)."""
    global _worker_build
    _worker_build = build


def _sendable(result: SignResult) -> SignResult:
    """A result as it can cross back to the gateway: an exception keeps the signing process's traceback as a
    note, and one that cannot travel goes as a RuntimeError naming it (gateway.workers.portable)."""
    if not isinstance(result, BaseException):
        return result
    result.add_note("".join(traceback.format_exception(result)).rstrip())
    return portable(result, f"{type(result).__name__}: {result}")


def _prepare_call_in_worker(call: Call) -> list[Prepared]:
    if _worker_build is None:
        raise RuntimeError("signing process started without a builder")
    return [Prepared(item.built, _sendable(item.result)) for item in prepare_call(_worker_build, call)]


def groups(batch: Sequence[Fragments]) -> list[list[int]]:
    """The indexes of the messages with fragments, grouped so that messages sharing a document, directly or
    through a chain of others, are in one group; each group in batch order, groups by their first message."""
    parent = list(range(len(batch)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]  # halve the path: later look-ups are shorter
            index = parent[index]
        return index

    first: dict[str, int] = {}  # each document's first message in the batch
    for index, fragments in enumerate(batch):
        for fragment in fragments:
            one, other = root(index), root(first.setdefault(fragment.document_id, index))
            parent[max(one, other)] = min(one, other)
    grouped: dict[int, list[int]] = {}
    for index, fragments in enumerate(batch):
        if fragments:
            grouped.setdefault(root(index), []).append(index)
    return list(grouped.values())


def spread(grouped: Sequence[Sequence[int]], parts: int) -> list[list[int]]:
    """Whole groups over at most `parts` calls (one per signing process), the largest first onto the call
    with the fewest messages; each call's messages in batch order."""
    calls: list[list[int]] = [[] for _ in range(max(parts, 1))]
    for group in sorted(grouped, key=len, reverse=True):
        min(calls, key=len).extend(group)
    return [sorted(call) for call in calls if call]


class SigningStage:
    """Assembles and signs the documents of a batch of messages side by side; start() and stop() around use."""

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

    async def sign(self, batch: Sequence[Fragments], committed: Mapping[str, EncodedDocument]) -> list[Prepared]:
        """Each message's new versions assembled on `committed` (the newest stored version of its documents)
        and on what earlier messages of the batch built, signed and encoded; or the exception that stopped
        them (a signing process that died: BrokenExecutor, a failure of the surroundings charged to no
        message; the pool is replaced). One call per signing process, each holding whole groups."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        calls = spread(groups(batch), self._processes)
        futures: list[asyncio.Future[list[Prepared]]] = []
        try:
            for indexes in calls:
                call = Call([batch[index] for index in indexes],
                            {fragment.document_id: committed[fragment.document_id] for index in indexes
                             for fragment in batch[index] if fragment.document_id in committed})
                if self._processes > 0:
                    futures.append(loop.run_in_executor(executor, _prepare_call_in_worker, call))
                else:
                    futures.append(loop.run_in_executor(executor, prepare_call, self._build, call))
        except BrokenExecutor as exc:
            await asyncio.gather(*futures, return_exceptions=True)
            self._replace(executor)
            return [Prepared(_documents_of(fragments), exc) for fragments in batch]
        answers = await asyncio.gather(*futures, return_exceptions=True)
        results = [Prepared() for _ in batch]
        for indexes, answer in zip(calls, answers, strict=True):
            for position, index in enumerate(indexes):
                results[index] = Prepared(_documents_of(batch[index]), answer) \
                    if isinstance(answer, BaseException) else answer[position]
        if any(isinstance(answer, BrokenExecutor) for answer in answers):
            self._replace(executor)
        return results

    def _replace(self, broken: Executor) -> None:
        if broken is not self._executor:
            return
        log.error("signing_worker_died")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()


def _documents_of(fragments: Fragments) -> frozenset[str]:
    """The documents a message would build when its call failed as a whole: all it has fragments of."""
    return frozenset(fragment.document_id for fragment in fragments)
