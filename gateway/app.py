"""Composition root: builds every part from the settings, starts them in order, stops them in reverse."""
from __future__ import annotations

import asyncio
import signal
import time
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from adapters.fhir_api import FhirApi
from adapters.mllp import MllpServer
from adapters.portal.base import PortalChannel, Submission
from adapters.portal.emulator import EmulatorConfig, create_emulator_app
from adapters.tls import server_ssl_context
from gateway.channels import build_submissions, open_channels
from gateway.config import Settings
from gateway.fhir_intake import FhirIntake
from gateway.intake import Hl7Intake
from gateway.logs import get_logger
from gateway.metrics import QUEUE_STATES, Metrics
from gateway.parking import rebuild_parked
from gateway.pipeline import Pipeline, mapping_executor
from gateway.retention import Retention
from gateway.signing import Signer, load_signer, record_certificate_expiry
from gateway.store import Store, open_store
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import screen
from mappings.model import Document, FacilityInfo, Issue

log = get_logger(__name__)


def gateway_version() -> str:
    try:
        return version("healthbook-gateway")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def facility_info(settings: Settings) -> FacilityInfo:
    f = settings.facility
    return FacilityInfo(name=f.name, bhxh_code=f.bhxh_code, moh_facility_id=f.moh_facility_id, tax_code=f.tax_code,
                        head_code=f.head_code)


def validate_fhir(resource: dict) -> list[Issue]:
    """The FHIR API refuses at once what the mapping could never turn into a health-book record."""
    return list(map_fhir(resource).issues)


class Gateway:
    """The running gateway: store, pipeline, MLLP listener, HTTP listener (and the emulator in demo)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(version=gateway_version())
        self.store: Store | None = None
        self.mllp: MllpServer | None = None
        self.http_port: int | None = None
        self._pipeline: Pipeline | None = None
        self._retention: Retention | None = None
        self._channels: dict[str, PortalChannel] = {}
        self._runners: list[web.AppRunner] = []
        self._signer: Signer | None = None
        self._ready = False

    async def start(self) -> None:
        s = self.settings
        signer = self._signer = load_signer(s.signing)
        record_certificate_expiry(self.metrics, signer)
        if s.emulator.enabled:
            await self._start_emulator(signer.certificate_pem)
        self.store = await open_store(s.store, owner=True, on_batch=self.metrics.group_commit_batch.observe)
        self._channels = open_channels(s.portal, self.metrics)
        facility, site = facility_info(s), s.site_mappings.as_mapping()

        def build(document: Document) -> list[Submission]:
            return build_submissions(document, facility, signer, s.portal, site=site)

        report = await rebuild_parked(self.store, build, self.metrics)  # the site mappings may have grown
        if report.queued or report.waiting:
            log.info("parked_documents_rebuilt", queued=len(report.queued), waiting=len(report.waiting))
        self._pipeline = Pipeline(self.store, self.metrics, s.pipeline, build, self._channels,
                                  lambda: mapping_executor(s.pipeline.mapping_processes))
        await self._pipeline.start()
        self._retention = Retention(self.store, self.metrics, s.store.retention_days)
        self._retention.start()
        if s.http.enabled:
            await self._start_http()
        if s.mllp.enabled:
            intake = Hl7Intake(self.store, self.metrics, s.mllp, screen)
            self.mllp = MllpServer(
                intake.store_and_ack, host=s.mllp.host, port=s.mllp.port,
                max_message_bytes=s.mllp.max_message_bytes, idle_timeout=s.mllp.idle_timeout_seconds,
                max_connections=s.mllp.max_connections, ssl_context=server_ssl_context(s.mllp.tls),
                on_connections=self.metrics.mllp_connections.set,
                on_refused=lambda reason: self.metrics.mllp_refused.labels(reason).inc())
            await self.mllp.start()
        self._ready = True
        log.info("gateway_started", version=gateway_version(), mllp_port=self.mllp.port if self.mllp else None,
                 http_port=self.http_port, store=str(s.store.path), signing=s.signing.source)

    async def stop(self) -> None:
        """Stop listening first (no new acknowledgements), then the workers, then the store."""
        self._ready = False
        if self.mllp is not None:
            await self.mllp.stop()
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self._retention is not None:
            await self._retention.stop()
        for channel in self._channels.values():
            await channel.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.store is not None:
            await self.store.close()
        if self._signer is not None:
            self._signer.close()
        log.info("gateway_stopped")

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
        app = web.Application(client_max_size=s.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        assert self.store is not None
        intake = FhirIntake(self.store, self.metrics, s, validate_fhir)
        FhirApi(intake, s.max_body_bytes, gateway_version()).mount(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, ssl_context=server_ssl_context(s.tls))
        await site.start()
        self._runners.append(runner)
        self.http_port = runner.addresses[0][1]

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

    async def refresh_queue_metrics(self) -> None:
        """Queue depth and oldest-pending age are read from the store at scrape time."""
        if self.store is None:
            return
        depths = await self.store.queue_depths()
        for queue, states in QUEUE_STATES.items():
            for state in states:
                self.metrics.queue_depth.labels(queue, state).set(depths.get((queue, state), 0))
        self.metrics.documents_waiting.set(len(await self.store.parked()))
        oldest = await self.store.oldest_pending_received_at()
        self.metrics.oldest_pending_age.set(max(0.0, time.time() - oldest) if oldest else 0.0)

    async def _start_emulator(self, certificate_pem: bytes) -> None:
        """The demo's local portal emulator, trusting this gateway's own (development) certificate."""
        s = self.settings
        bhxh, hub = s.portal.bhxh, s.portal.hub
        app = create_emulator_app(
            EmulatorConfig(host=s.emulator.host, port=s.emulator.port, cert_pem=certificate_pem,
                           username=bhxh.username, password=bhxh.password.get_secret_value(),
                           service_type=hub.service_type),
            bhxh_paths=(bhxh.token_path, bhxh.checkin_path, bhxh.submit_path),
            hub_paths=(hub.login_path, hub.push_path))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, s.emulator.host, s.emulator.port).start()
        self._runners.append(runner)
        log.warning("portal_emulator_started", port=s.emulator.port,
                    note="demo only: documents go to the local emulator, not the national portal")
