"""The portal exchanges in a worker process (hbgw-send), off the gateway's event loop.

An HTTP exchange with a portal costs the client about as much CPU as acknowledging a message: building the
form, TLS, reading and classifying the answer. With `pipeline.delivery_processes = 1` the portal clients
(adapters/portal, one per enabled channel, each with its token) live in a process of their own, and the
submission stage keeps everything else: claims, leases, order per patient, receipts, retries. The stage
talks to `RemoteChannel`s, which send each submission to that process over a socket and get back how the
attempt ended, as plain values; the clients' metric reports (responses, latency) come back with it.

A delivery process that dies fails the attempts under way as transient (they are retried, with the same
idempotency key) and is started again at the next submission.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any

from adapters.portal.base import (
    PermanentPortalError,
    PortalChannel,
    PortalError,
    Receipt,
    Submission,
    TransientPortalError,
)
from adapters.portal.bhxh import BhxhAccount
from gateway.config import PortalSettings
from gateway.logs import configure_logging, correlation, get_logger
from gateway.metrics import Metrics
from gateway.workers import start_worker

log = get_logger(__name__)

_LENGTH = struct.Struct("!I")
STARTUP_SECONDS = 60.0  # a spawned process imports the gateway first: seconds on a loaded 2-core host
# An attempt's end as plain values: ("delivered", Receipt) | ("transient", reason, status, result_code,
# retry_after) | ("permanent", reason, status, result_code); and the clients' reports since the last answer:
# ("response", channel, status) | ("latency", channel, seconds).
Outcome = tuple[Any, ...]
Report = tuple[str, str, float]


class DeliveryStartError(RuntimeError):
    """The delivery process could not be started or could not open the portal clients."""


@dataclass(frozen=True, slots=True)
class DeliverySetup:
    """What the delivery process needs to open the same clients as the gateway would."""

    portal: PortalSettings
    accounts: tuple[BhxhAccount, ...]
    log_level: str
    log_format: str


async def _write(writer: asyncio.StreamWriter, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(data)) + data)
    await writer.drain()


async def _read(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))


def outcome_of(exc: PortalError) -> Outcome:
    """A classified portal failure as plain values (exceptions with keyword fields do not pickle back)."""
    if isinstance(exc, TransientPortalError):
        return ("transient", exc.reason, exc.status, exc.result_code, exc.retry_after)
    return ("permanent", exc.reason, exc.status, exc.result_code)


def raise_outcome(outcome: Outcome) -> Receipt:
    """The receipt of a delivered attempt, else the classified error it ended with."""
    kind = outcome[0]
    if kind == "delivered":
        receipt: Receipt = outcome[1]
        return receipt
    if kind == "transient":
        _, reason, status, result_code, retry_after = outcome
        raise TransientPortalError(reason, status=status, result_code=result_code, retry_after=retry_after)
    _, reason, status, result_code = outcome
    raise PermanentPortalError(reason, status=status, result_code=result_code)


# ---- in the delivery process -----------------------------------------------------------------------

def _serve(sock: socket.socket, parent_pid: int, setup: DeliverySetup) -> None:
    """The delivery process: open the portal clients, then answer submissions until the socket closes."""
    start_worker(parent_pid, "hbgw-send")
    # systemd and Ctrl-C signal the whole group: the gateway stops this process itself (it closes the socket
    # once the attempts under way are answered), so an exchange is never cut off half-way
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(setup.log_level, setup.log_format)
    asyncio.run(_answer_submissions(sock, setup))


async def _answer_submissions(sock: socket.socket, setup: DeliverySetup) -> None:
    from gateway.channels import open_channels  # here: the gateway process imports this module first

    reports: list[Report] = []
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        channels = open_channels(setup.portal, _ReportingMetrics(reports), list(setup.accounts))
    except Exception as exc:  # noqa: BLE001 - told to the gateway, which refuses to start
        await _write(writer, ("error", f"{type(exc).__name__}: {exc}"))
        writer.close()
        return
    await _write(writer, ("ready",))
    tasks: set[asyncio.Task[None]] = set()

    async def attempt(number: int, submission: Submission) -> None:
        with correlation(submission.idempotency_key, channel=submission.channel):
            channel = channels.get(submission.channel)
            try:
                if channel is None:
                    raise TransientPortalError(f"channel {submission.channel} is not enabled in the delivery process")
                outcome: Outcome = ("delivered", await channel.submit(submission))
            except PortalError as exc:
                outcome = outcome_of(exc)
            except Exception as exc:
                log.exception("delivery_unexpected_error")
                outcome = ("transient", f"unexpected {type(exc).__name__} in the portal client", None, "", None)
            sent, reports[:] = list(reports), []
            try:
                await _write(writer, (number, outcome, sent))
            except (ConnectionError, RuntimeError):  # the gateway is gone: its lease makes it try again
                log.warning("delivery_answer_undelivered", outcome=outcome[0])

    try:
        while True:
            try:
                number, submission = await _read(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the gateway is gone or stopping
            task = asyncio.create_task(attempt(number, submission))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels.values():
            await channel.close()
        writer.close()


class _ReportingMetrics:
    """Stands in for the gateway's Metrics in the delivery process: the clients' reports are sent back."""

    def __init__(self, reports: list[Report]) -> None:
        self.portal_responses = _Labelled(reports, "response")
        self.submit_latency = _Labelled(reports, "latency")


class _Labelled:
    def __init__(self, reports: list[Report], kind: str) -> None:
        self._reports = reports
        self._kind = kind

    def labels(self, channel: str, *rest: str) -> _Child:
        return _Child(self._reports, self._kind, channel, rest)


@dataclass(frozen=True, slots=True)
class _Child:
    reports: list[Report]
    kind: str
    channel: str
    rest: tuple[str, ...]

    def inc(self) -> None:
        self.reports.append((self.kind, self.channel, float(self.rest[0])))

    def observe(self, seconds: float) -> None:
        self.reports.append((self.kind, self.channel, seconds))


# ---- in the gateway process ------------------------------------------------------------------------

class DeliveryProcess:
    """The gateway's end of the delivery process: send a submission, await how its attempt ended."""

    def __init__(self, setup: DeliverySetup, metrics: Metrics) -> None:
        self._setup = setup
        self._metrics = metrics
        self._numbers = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[Outcome], asyncio.StreamWriter]] = {}
        self._process: BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._closed = False
        # An attempt is one exchange plus, at most, a login and a second try: an answer that has not come
        # after this long will not come (a hung process), so it is stopped and started again.
        longest = max(setup.portal.bhxh.timeout_seconds, setup.portal.hub.timeout_seconds)
        self._answer_within = 4 * longest + 30

    @property
    def pid(self) -> int | None:
        """The delivery process's id while it runs (operators look for hbgw-send)."""
        return self._process.pid if self._process is not None else None

    def channels(self, names: Sequence[str]) -> dict[str, PortalChannel]:
        """A stand-in client per channel name, for the submission stage."""
        return {name: RemoteChannel(name, self.submit, self.close) for name in names}

    async def start(self) -> None:
        """Start the process now; DeliveryStartError when it cannot open the portal clients."""
        await self._ensure_started()

    async def _ensure_started(self) -> asyncio.StreamWriter:
        async with self._starting:
            if self._closed:
                raise TransientPortalError("the gateway is stopping: no more portal exchanges")
            if self._writer is not None and self._process is not None and self._process.is_alive():
                return self._writer
            if self._writer is not None and self._reading is not None:
                # it died: its reader first takes what it answered before, then fails the attempts left
                await asyncio.gather(self._reading, return_exceptions=True)
            ours, theirs = socket.socketpair()
            try:
                process = get_context("spawn").Process(target=_serve, name="hbgw-send", daemon=True,
                                                      args=(theirs, os.getpid(), self._setup))
                process.start()
            finally:
                theirs.close()  # the process has its own copy
            try:
                reader, writer = await asyncio.open_unix_connection(sock=ours)
                hello = await asyncio.wait_for(_read(reader), STARTUP_SECONDS)
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
                process.kill()
                ours.close()
                raise DeliveryStartError(f"the delivery process did not start ({type(exc).__name__})") from None
            if hello[0] != "ready":
                await asyncio.get_running_loop().run_in_executor(None, process.join, 5)
                writer.close()
                raise DeliveryStartError(f"the delivery process cannot open the portal clients: {hello[1]}")
            self._process, self._writer = process, writer
            self._reading = asyncio.create_task(self._read_answers(reader, writer, process), name="delivery-answers")
            return writer

    async def submit(self, submission: Submission) -> Receipt:
        """One attempt in the delivery process: its receipt, or the classified error it ended with."""
        try:
            writer = await self._ensure_started()
        except DeliveryStartError as exc:
            raise TransientPortalError(str(exc)) from None
        number = next(self._numbers)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[number] = (answer, writer)
        try:
            await _write(writer, (number, submission))
            outcome = await asyncio.wait_for(asyncio.shield(answer), self._answer_within)
        except (ConnectionError, RuntimeError) as exc:  # the process went away as the submission was sent
            raise TransientPortalError(f"the delivery process could not take the attempt ({type(exc).__name__})")
        except TimeoutError:
            log.error("delivery_process_hung", seconds=self._answer_within)
            if self._writer is writer and self._process is not None:
                self._process.kill()  # the next attempt starts another
                self._stopped(writer)
            raise TransientPortalError(f"no answer from the delivery process in {self._answer_within:.0f} s") from None
        finally:
            self._waiting.pop(number, None)
        return raise_outcome(outcome)

    async def _read_answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            process: BaseProcess) -> None:
        try:
            while True:
                number, outcome, reports = await _read(reader)
                answer, _ = self._waiting.get(number, (None, None))
                if answer is not None and not answer.done():
                    answer.set_result(outcome)
                self._report(reports)
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            pass  # the process ended (or was stopped by close())
        except Exception:  # an answer that cannot be read: the process is stopped rather than trusted further
            log.exception("delivery_answer_unreadable")
            process.kill()
        finally:
            if self._writer is writer:  # not closed by us: it died
                self._stopped(writer)
            if not self._closed:  # close() waits for the process itself
                await asyncio.get_running_loop().run_in_executor(None, process.join, 30)  # no zombie left

    def _stopped(self, writer: asyncio.StreamWriter, *, died: bool = True) -> None:
        """The process behind `writer` is gone: its attempts under way end as transient failures."""
        if self._writer is writer:
            self._writer = None
        stopped = [answer for answer, sent_to in self._waiting.values() if sent_to is writer and not answer.done()]
        if died or stopped:
            log.error("delivery_process_died" if died else "delivery_process_stopped_unanswered",
                      attempts_under_way=len(stopped))
        for answer in stopped:
            answer.set_result(("transient", "the delivery process stopped during the attempt", None, "", None))

    def _report(self, reports: list[Report]) -> None:
        for kind, channel, value in reports:
            if kind == "response":
                self._metrics.portal_responses.labels(channel, str(int(value))).inc()
            else:
                self._metrics.submit_latency.labels(channel).observe(value)

    async def close(self) -> None:
        """Let the process finish the attempts under way, then stop it; no process is started after this."""
        async with self._starting:
            self._closed = True
            writer, process = self._writer, self._process
            self._writer = self._process = None
        if writer is not None and writer.can_write_eof():
            writer.write_eof()  # the process answers what it has under way, then leaves
        if process is not None:
            await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
            if process.is_alive():
                process.kill()
                await asyncio.get_running_loop().run_in_executor(None, process.join, 5)
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        if writer is not None:
            self._stopped(writer, died=False)  # an attempt whose answer never came: transient, retried
            writer.close()


class RemoteChannel:
    """A PortalChannel whose exchanges happen in the delivery process."""

    def __init__(self, name: str, submit: Callable[[Submission], Awaitable[Receipt]],
                 close: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._submit = submit
        self._close = close

    async def submit(self, submission: Submission) -> Receipt:
        """One attempt, made by the delivery process's client for this channel."""
        return await self._submit(submission)

    async def close(self) -> None:
        """Stop the delivery process (once, whichever channel is closed first)."""
        await self._close()
