"""Composition root: builds every part from the settings, starts them in order, stops them in reverse."""
from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from aiohttp import web

from adapters.fhir_api import FhirApi
from adapters.limits import ConnectionLimits, HttpGuard, LimitedSite
from adapters.mllp import MllpServer
from adapters.portal.base import PortalChannel
from adapters.portal.emulator import EmulatorConfig, create_emulator_app
from adapters.portal.emulator.state import BhxhEmulatorAccount
from adapters.tls import server_ssl_context
from gateway.builder import SubmissionBuilder
from gateway.channels import CHANNELS, channel_settings, open_channels
from gateway.config import Settings
from gateway.delivery_workers import DeliveryProcess, DeliverySetup
from gateway.facilities import Facilities, document_keys
from gateway.fhir_intake import FhirIntake
from gateway.intake import Hl7Intake
from gateway.listener_loop import ListenerLoop
from gateway.logs import get_logger
from gateway.metrics import QUEUE_STATES, Metrics
from gateway.parking import rebuild_parked
from gateway.pipeline import Pipeline, mapping_executor
from gateway.retention import Retention
from gateway.signing import Signer, load_signer, record_certificate_expiry
from gateway.store import Store, open_store
from gateway.version import gateway_version
from mappings.fhir_in import map_fhir
from mappings.fhir_in.limits import limit_issues
from mappings.hl7v2 import screen
from mappings.model import Document, Issue

log = get_logger(__name__)


def validate_fhir(resource: dict) -> list[Issue]:
    """The FHIR API refuses at once what the mapping could never turn into a health-book record."""
    return limit_issues(resource) + list(map_fhir(resource).issues)


def fhir_validator(facilities: Facilities) -> Callable[[dict], list[Issue]]:
    """validate_fhir, and with several facilities the refusal of a visit that names none of them."""
    def validate(resource: dict) -> list[Issue]:
        result = map_fhir(resource)
        issues = limit_issues(resource) + list(result.issues)
        if facilities.several and result.ok:
            for fragment in result.fragments:
                entries = [{"resource": item} for item in fragment.resources]
                document = Document(fragment.document_id, 0, fragment.kind, "", {"entry": entries})
                issues += facilities.fhir_refusals(document_keys(document))
        return issues
    return validate


class Gateway:
    """The running gateway: store, pipeline, MLLP listener, HTTP listener (and the emulator in demo)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(version=gateway_version())
        self.metrics.watch_senders("mllp", ((rule.label, rule.silent_after_minutes * 60)
                                            for rule in settings.mllp.allowed_senders))
        self.metrics.watch_senders("fhir", ((sender.name, sender.silent_after_minutes * 60)
                                            for sender in settings.http.fhir_senders))
        self.store: Store | None = None
        self.mllp: MllpServer | None = None
        self._listener: ListenerLoop | None = None  # the MLLP listener's own loop, when the store allows it
        self.http_port: int | None = None
        self.console_port: int | None = None
        self._pipeline: Pipeline | None = None
        self._retention: Retention | None = None
        self._channels: dict[str, PortalChannel] = {}
        self._delivery: DeliveryProcess | None = None  # the portal clients' process, when they run in one
        self._runners: list[web.AppRunner] = []
        self._facilities: Facilities | None = None
        self._practitioners: dict[str, Signer] = {}
        self._ready = False

    async def start(self) -> None:
        s = self.settings
        facilities = self._facilities = Facilities(s, load_signer)
        signer = facilities.all[0].signer
        record_certificate_expiry(self.metrics, min(facilities.signers, key=lambda item: item.not_after))
        practitioners = self._practitioners = {doctor.licence: load_signer(doctor)
                                               for doctor in s.portal.hub.practitioner_signers}
        if s.emulator.enabled:
            await self._start_emulator(signer.certificate_pem)
        self.store = await open_store(s.store, owner=True, on_batch=self.metrics.group_commit_batch.observe)
        backlog = await self._backlog()
        accounts = [facility.account for facility in facilities.all]
        enabled = [spec.name for spec in CHANNELS if channel_settings(s.portal, spec).enabled]
        if s.pipeline.delivery_processes and enabled:
            portal = s.portal.model_copy(update={"hub": s.portal.hub.model_copy(update={"practitioner_signers": []})})
            self._delivery = DeliveryProcess(DeliverySetup(portal, tuple(accounts), s.logging.level,
                                                           s.logging.format),
                                             self.metrics)  # the doctors' keys and PINs stay here: it signs nothing
            await self._delivery.start()
            self._channels = self._delivery.channels(enabled)
        else:
            self._channels = open_channels(s.portal, self.metrics, accounts)
        builder = SubmissionBuilder(s, facilities, practitioners)
        report = await rebuild_parked(self.store, builder, self.metrics)  # the site mappings may have grown
        if report.queued or report.waiting:
            log.info("parked_documents_rebuilt", queued=len(report.queued), waiting=len(report.waiting))
        # a hardware token's session stays in this process: sign in a thread of it
        signing_processes = 0 if builder.uses_token else s.pipeline.signing_processes
        self._pipeline = Pipeline(
            self.store, self.metrics, s.pipeline, builder, self._channels,
            lambda: mapping_executor(s.pipeline.mapping_processes), signing_processes=signing_processes,
            mapping_processes=s.pipeline.mapping_processes)
        await self._pipeline.start()
        self._retention = Retention(self.store, self.metrics, s.store.retention_days)
        self._retention.start()
        if s.http.enabled:
            await self._start_http()
        if s.console.enabled:
            await self._start_console()
        if s.mllp.enabled:
            intake = Hl7Intake(self.store, self.metrics, s.mllp, screen,
                               facility_refusals=facilities.hl7_refusals if facilities.several else None)
            self.mllp = MllpServer(
                intake.store_and_ack, host=s.mllp.host, port=s.mllp.port,
                max_message_bytes=s.mllp.max_message_bytes, idle_timeout=s.mllp.idle_timeout_seconds,
                max_connections=s.mllp.max_connections, ssl_context=server_ssl_context(s.mllp.tls),
                on_connections=self.metrics.mllp_connections.set,
                on_refused=lambda reason: self.metrics.mllp_refused.labels(reason).inc(),
                max_connections_per_host=s.mllp.max_connections_per_host, frame_timeout=s.mllp.frame_timeout_seconds)
            if self.store.writes_from_any_loop:  # acknowledgements wait for no pipeline task (listener_loop.py)
                self._listener = ListenerLoop()
                await self._listener.run(self.mllp.start())
            else:
                await self.mllp.start()
        self._ready = True
        log.info("gateway_started", version=gateway_version(), mllp_port=self.mllp.port if self.mllp else None,
                 http_port=self.http_port, console_port=self.console_port, store=s.store.location(),
                 signing=s.signing.source, **backlog)

    async def stop(self) -> None:
        """Stop listening first (no new acknowledgements), then the workers, then the store."""
        self._ready = False
        if self._listener is not None:
            if self.mllp is not None:
                await self._listener.run(self.mllp.stop())
            await self._listener.close()
            self._listener = None
        elif self.mllp is not None:
            await self.mllp.stop()
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self._retention is not None:
            await self._retention.stop()
        for channel in self._channels.values():
            await channel.close()
        if self._delivery is not None:
            await self._delivery.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        backlog: dict[str, int] = {}
        if self.store is not None:
            backlog = await self._backlog()
            await self.store.close()
        if self._facilities is not None:
            for signer in self._facilities.signers:
                signer.close()
        for practitioner in self._practitioners.values():
            practitioner.close()
        log.info("gateway_stopped", **backlog)

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()

    # ---- HTTP: FHIR API and operations endpoints ----------------------------------------------

    async def _start_http(self) -> None:
        s = self.settings.http
        guard = HttpGuard(ConnectionLimits(s.max_connections, s.max_connections_per_host), s.request_timeout_seconds,
                          lambda reason: self.metrics.http_refused.labels(reason).inc())
        app = web.Application(client_max_size=s.max_body_bytes, middlewares=[guard.middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        assert self.store is not None
        assert self._facilities is not None
        intake = FhirIntake(self.store, self.metrics, s, fhir_validator(self._facilities))
        FhirApi(intake, s.max_body_bytes, gateway_version()).mount(app)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=s.request_timeout_seconds)
        await runner.setup()
        site = LimitedSite(runner, s.host, s.port, ssl_context=server_ssl_context(s.tls), guard=guard)
        await site.start()
        self._runners.append(runner)
        self.http_port = runner.addresses[0][1]

    async def _start_console(self) -> None:
        """The operator console on its own port, reading and acting through this gateway's store."""
        from gateway.console import create_console_app, load_accounts

        s = self.settings
        assert self.store is not None
        accounts = load_accounts(s.console, s.store.path.parent)
        channels = {spec.name: channel_settings(s.portal, spec).enabled for spec in CHANNELS}
        app = create_console_app(self.store, accounts, channels, idle_seconds=s.console.session_idle_minutes * 60,
                                 secure_cookies=s.console.tls.enabled)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, s.console.host, s.console.port, ssl_context=server_ssl_context(s.console.tls)).start()
        self._runners.append(runner)
        self.console_port = runner.addresses[0][1]
        scheme = "https" if s.console.tls.enabled else "http"
        log.info("console_started", url=f"{scheme}://{s.console.host}:{self.console_port}/", accounts=len(accounts))
        if s.console.demo_account:
            log.warning("console_demo_account", account="demo",
                        password_file=str(s.store.path.parent / "console-demo-password"),
                        note="demo only: configure console.accounts for production")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if not self._ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.refresh_queue_metrics()
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _backlog(self) -> dict[str, int]:
        """What waits in the store, as counts only: logged at start and at stop."""
        assert self.store is not None
        depths = await self.store.queue_depths()
        return {"backlog_received": depths.get(("inbox", "received"), 0),
                "backlog_pending": depths.get(("outbox", "pending"), 0) + depths.get(("outbox", "in_flight"), 0),
                "backlog_dead": depths.get(("inbox", "dead"), 0) + depths.get(("outbox", "dead"), 0)}

    async def refresh_queue_metrics(self) -> None:
        """Queue depth, oldest-pending age and the store's files are read at scrape time."""
        if self.store is None:
            return
        if self.settings.store.backend == "sqlite":  # PostgreSQL's files are watched on the database server
            self.metrics.record_store_files(self.settings.store.path)
        depths = await self.store.queue_depths()
        for queue, states in QUEUE_STATES.items():
            for state in states:
                self.metrics.queue_depth.labels(queue, state).set(depths.get((queue, state), 0))
        self.metrics.documents_waiting.set(len(await self.store.parked()))
        oldest = await self.store.oldest_pending_received_at()
        self.metrics.oldest_pending_age.set(max(0.0, time.time() - oldest) if oldest else 0.0)

    def _emulated_accounts(self) -> tuple[BhxhEmulatorAccount, ...]:
        """Each facility's BHXH account, as the demo's emulated portal should know it."""
        assert self._facilities is not None
        served: dict[tuple[str, str], list[str]] = {}
        for facility in self._facilities.all:
            served.setdefault((facility.account.username, facility.account.password), []).append(
                facility.info.bhxh_code)
        return tuple(BhxhEmulatorAccount(username, password, tuple(codes))
                     for (username, password), codes in served.items())

    async def _start_emulator(self, certificate_pem: bytes) -> None:
        """The demo's local portal emulator, trusting this gateway's own (development) certificate."""
        s = self.settings
        bhxh, hub = s.portal.bhxh, s.portal.hub
        app = create_emulator_app(
            EmulatorConfig(host=s.emulator.host, port=s.emulator.port, cert_pem=certificate_pem,
                           username=bhxh.username, password=bhxh.password.get_secret_value(),
                           service_type=hub.service_type, hub_sorted_keys=hub.checksum_key_order == "sorted",
                           bhxh_accounts=self._emulated_accounts()),
            bhxh_paths=(bhxh.token_path, bhxh.checkin_path, bhxh.submit_path),
            hub_paths=(hub.login_path, hub.push_path))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, s.emulator.host, s.emulator.port).start()
        self._runners.append(runner)
        log.warning("portal_emulator_started", port=s.emulator.port,
                    note="demo only: documents go to the local emulator, not the national portal")
