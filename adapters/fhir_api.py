"""FHIR R4 REST protocol under `/fhir`: routes, content types, body limits, credentials and OperationOutcome.

The handler decides what a request means for the health book; this module only turns HTTP into
`FhirRequest` values and `FhirAnswer` values back into HTTP, so every answer, even aiohttp's own
404/405/413, is an `application/fhir+json` OperationOutcome.
"""
from __future__ import annotations

import json
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Protocol

import structlog
from aiohttp import web

from adapters.tls import peer_common_name
from mappings.fhir_in import operation_outcome
from mappings.model import Issue

log = structlog.get_logger(__name__)

FHIR_JSON = "application/fhir+json"
ACCEPTED_CONTENT_TYPES = frozenset({FHIR_JSON, "application/json"})
FHIR_VERSION = "4.0.1"
FHIR_BASE_PATH = "/fhir"
# The FHIR issue type of an HTTP-level refusal; 200 and 422 answers keep the types the mapping gave.
_STATUS_ISSUE_TYPES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                       406: "not-supported", 413: "too-long", 415: "not-supported", 500: "exception"}
_ACCEPTABLE = frozenset({"*/*", "application/*", *ACCEPTED_CONTENT_TYPES})
_JSON_FORMATS = frozenset({"json", *ACCEPTED_CONTENT_TYPES})  # the `_format` values that mean JSON
_NOT_CRITERIA = ("_format", "_pretty")  # query parameters of the exchange, not conditional-create criteria
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")

Interaction = Literal["create", "update", "bundle", "validate"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client proved: a bearer token (never logged) and/or a verified client-certificate CN."""

    bearer_token: str = field(default="", repr=False)
    client_cn: str = ""


@dataclass(frozen=True, slots=True)
class FhirRequest:
    """One parsed FHIR interaction: `resource` is a JSON object with a string resourceType."""

    interaction: Interaction
    sender: str
    resource: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    if_none_exist: str = ""
    prefer_minimal: bool = False  # `Prefer: return=minimal`: a create answers with no body
    prefer_representation: bool = False  # `Prefer: return=representation`: the resource as created
    resource_id: str = ""  # update: the id in the URL, which the body's id matches


@dataclass(frozen=True, slots=True)
class FhirAnswer:
    """The status and exact body to send; `location` becomes the Location header."""

    status: int
    body: bytes
    location: str = ""
    etag: str = ""
    last_modified: str = ""


class FhirHandler(Protocol):
    """The business side behind the routes (gateway.fhir_intake.FhirIntake)."""

    @property
    def resource_types(self) -> Sequence[str]: ...

    def authenticate(self, credentials: Credentials) -> str | None: ...

    async def submit(self, request: FhirRequest) -> FhirAnswer: ...

    async def validate(self, request: FhirRequest) -> FhirAnswer: ...

    def refused(self, status: int, issue: Issue) -> None: ...


def reason_phrase(status: int) -> str:
    """The phrase that goes beside a status in Bundle.entry.response.status."""
    return f"{status} {HTTPStatus(status).phrase}"


def information(location: str, message: str) -> dict[str, Any]:
    """A one-issue informational OperationOutcome, for answers that carry no resource."""
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational",
        "details": {"text": message}, "expression": [location]}]}


def to_json(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def outcome_answer(status: int, issues: Sequence[Issue]) -> FhirAnswer:
    """An answer whose body is the OperationOutcome of these issues, typed by the status where HTTP says more."""
    outcome = operation_outcome(list(issues))
    if status in _STATUS_ISSUE_TYPES:
        for item in outcome["issue"]:
            item["code"] = _STATUS_ISSUE_TYPES[status]
    return FhirAnswer(status, to_json(outcome))


def capability_statement(resource_types: Sequence[str], software_version: str) -> dict[str, Any]:
    """What this server accepts, so FHIR clients can discover it at GET /fhir/metadata."""
    resources = [{
        "type": resource_type,
        "interaction": [{"code": "create"}, {"code": "update"}],
        "updateCreate": True,
        "conditionalCreate": True,
        "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}],
    } for resource_type in resource_types]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": {"name": "healthbook-gateway", "version": software_version},
        "implementation": {"description": "On-premises gateway to the Vietnamese national e-health book"},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "application/json"],
        "rest": [{
            "mode": "server",
            "security": {"service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}],
                "text": "Bearer token or TLS client certificate, per sender"}]},
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "operation": [{"name": "validate",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}],
        }],
    }


class FhirApi:
    """The aiohttp sub-application mounted at /fhir."""

    def __init__(self, handler: FhirHandler, max_body_bytes: int, software_version: str) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._metadata = to_json(capability_statement(handler.resource_types, software_version))
        self._base_path = FHIR_BASE_PATH

    def mount(self, parent: web.Application, base_path: str = FHIR_BASE_PATH) -> None:
        """Serve the API under `base_path`, the FHIR base URL that Location headers are built on."""
        self._base_path = base_path
        parent.add_subapp(base_path, self._app())

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_as_outcomes])
        app.router.add_get("/metadata", self._metadata_route)
        app.router.add_post("", self._bundle_route)
        app.router.add_post("/", self._bundle_route)
        app.router.add_post("/$validate", self._validate_route)
        app.router.add_post("/{resource_type}/$validate", self._validate_route)
        app.router.add_post("/{resource_type}", self._create_route)
        app.router.add_put("/{resource_type}/{resource_id}", self._update_route)
        return app

    @web.middleware
    async def _errors_as_outcomes(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """aiohttp's own 404/405/413 and any unexpected failure still answer an OperationOutcome."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            issue = Issue(_type_in_path(request), "not-found" if exc.status == 404 else "not-supported",
                          f"{request.method} {request.path}: {exc.reason}")
            if exc.status == 413:
                issue = self._too_large()
            return self._refuse(request, exc.status, issue)
        except Exception as exc:  # noqa: BLE001 (a failed commit among them: answer 500, never 2xx)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            # The exception text may quote the body, so only its type and place are logged.
            log.error("fhir_request_failed", error=type(exc).__name__, at=f"{where.filename}:{where.lineno}")
            return self._refuse(request, 500, Issue("$this", "exception",
                                                    "the gateway could not take this request; retry later"))

    async def _metadata_route(self, request: web.Request) -> web.Response:
        if not _accepts_json(request):
            return self._refuse(request, 406, _not_acceptable())
        return self._respond(request, FhirAnswer(200, self._metadata))

    async def _bundle_route(self, request: web.Request) -> web.Response:
        return await self._serve(request, "bundle", "Bundle")

    async def _create_route(self, request: web.Request) -> web.Response:
        resource_type = request.match_info["resource_type"]
        if resource_type not in self._handler.resource_types:
            return self._refuse(request, 404, Issue(_type_in_path(request), "unsupported-resource",
                                           f"resource type {resource_type!r} is not accepted by this server"))
        return await self._serve(request, "create", resource_type)

    async def _update_route(self, request: web.Request) -> web.Response:
        """PUT [type]/[id]: create-or-update with a client-assigned id (fhirpy saves a resource with an id so)."""
        resource_type = request.match_info["resource_type"]
        if resource_type not in self._handler.resource_types:
            return self._refuse(request, 404, Issue(_type_in_path(request), "unsupported-resource",
                                           f"resource type {resource_type!r} is not accepted by this server"))
        if not _ID.fullmatch(request.match_info["resource_id"]):
            return self._refuse(request, 400, Issue(f"{resource_type}.id", "invalid", "the id in the URL is not a FHIR id"))
        return await self._serve(request, "update", resource_type)

    async def _validate_route(self, request: web.Request) -> web.Response:
        return await self._serve(request, "validate", request.match_info.get("resource_type", ""))

    async def _serve(self, request: web.Request, interaction: Interaction, resource_type: str) -> web.Response:
        """Authenticate, then screen the wire (type, size, JSON), then hand over to the handler."""
        sender = self._handler.authenticate(_credentials(request))
        if sender is None:
            return self._refuse(request, 401, Issue("Authorization", "login",
                                                    "a valid bearer token or client certificate is required"))
        if not _accepts_json(request):
            return self._refuse(request, 406, _not_acceptable())
        problem = _content_type_problem(request)
        if problem is not None:
            return self._refuse(request, 415, problem)
        body = await self._read_body(request)
        if body is None:
            return self._refuse(request, 413, self._too_large())
        resource, problem = _parse_resource(body, resource_type, interaction)
        resource_id = request.match_info.get("resource_id", "")
        if problem is None and interaction == "update" and resource.get("id") != resource_id:
            problem = Issue(f"{resource_type}.id", "invalid", "the resource's id must be the id in the URL")
        if problem is not None:
            return self._refuse(request, 400, problem)
        # fhirpy and others send conditional-create criteria as the query string instead of If-None-Exist.
        criteria = request.headers.get("If-None-Exist", "") or (_criteria(request) if interaction == "create" else "")
        prefer = request.headers.get("Prefer", "").replace(" ", "")
        fhir_request = FhirRequest(interaction, sender, resource, body, criteria, "return=minimal" in prefer,
                                   "return=representation" in prefer, resource_id)
        if interaction == "validate":
            return self._respond(request, await self._handler.validate(fhir_request))
        return self._respond(request, await self._handler.submit(fhir_request))

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit (never buffered beyond it)."""
        if request.content_length is not None and request.content_length > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> Issue:
        return Issue("$this", "too-long", f"request body exceeds the {self._max_body}-byte limit")

    def _refuse(self, request: web.Request, status: int, issue: Issue) -> web.Response:
        self._handler.refused(status, issue)
        return self._respond(request, outcome_answer(status, [issue]))

    def _respond(self, request: web.Request, answer: FhirAnswer) -> web.Response:
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if answer.location:  # [type]/[id]/_history/1, relative to the FHIR base: made absolute here
            headers["Location"] = str(request.url.origin().with_path(f"{self._base_path}/{answer.location}"))
        if answer.etag:
            headers["ETag"] = answer.etag
        if answer.last_modified:
            headers["Last-Modified"] = answer.last_modified
        if answer.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="healthbook-gateway"'
        return web.Response(status=answer.status, body=answer.body, headers=headers,
                            content_type=FHIR_JSON, charset="utf-8")


def _type_in_path(request: web.Request) -> str:
    """The resource type a path names, as an issue location that is safe to log (an id in a path may be personal)."""
    segments = request.path.split("/")
    segment = segments[2] if len(segments) > 2 else ""
    return segment if _RESOURCE_TYPE.fullmatch(segment) else "$this"


def _credentials(request: web.Request) -> Credentials:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    peercert = request.transport.get_extra_info("peercert") if request.transport is not None else None
    return Credentials(token.strip() if scheme.lower() == "bearer" else "", peer_common_name(peercert))


def _accepts_json(request: web.Request) -> bool:
    """Whether the client takes JSON: `_format` when given (it overrides Accept, FHIR http.html), else Accept."""
    if "_format" in request.query:
        return request.query["_format"].split(";")[0].strip().lower() in _JSON_FORMATS
    ranges = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "*/*").split(",")}
    return bool(ranges & _ACCEPTABLE)


def _not_acceptable() -> Issue:
    return Issue("Accept", "not-supported", f"this server answers only {FHIR_JSON} (Accept or _format)")


def _criteria(request: web.Request) -> str:
    """The conditional-create criteria in the query string, without the exchange's own parameters."""
    return "&".join(part for part in request.query_string.split("&")
                    if part and part.split("=", 1)[0] not in _NOT_CRITERIA)


def _content_type_problem(request: web.Request) -> Issue | None:
    charset = (request.charset or "utf-8").lower()
    if request.content_type not in ACCEPTED_CONTENT_TYPES or charset not in ("utf-8", "utf8"):
        return Issue("Content-Type", "not-supported",
                     f"Content-Type must be {FHIR_JSON} or application/json in UTF-8, not {request.content_type!r}")
    return None


def _parse_resource(body: bytes, resource_type: str,
                    interaction: Interaction) -> tuple[dict[str, Any], Issue | None]:
    """The JSON object in the body, or why it is not a FHIR resource of the expected type."""
    try:
        resource = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return {}, Issue("$this", "structure", f"body is not valid UTF-8 at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return {}, Issue("$this", "structure",
                         f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:  # an integer too long to convert, or nesting too deep
        return {}, Issue("$this", "structure", f"body is not acceptable JSON ({type(exc).__name__})")
    if not isinstance(resource, dict):
        return {}, Issue("$this", "structure", f"body is a JSON {type(resource).__name__}, not a FHIR resource object")
    if interaction == "validate" and resource.get("resourceType") == "Parameters":
        parameters: list[Any] = resource["parameter"] if isinstance(resource.get("parameter"), list) else []
        resource = next((p["resource"] for p in parameters if isinstance(p, dict) and p.get("name") == "resource"
                         and isinstance(p.get("resource"), dict)), None)
        if resource is None:
            return {}, Issue("Parameters.parameter", "required", "$validate needs a parameter 'resource'")
    found = resource.get("resourceType")
    if not isinstance(found, str) or not found:
        return {}, Issue("resourceType", "required", "resourceType is required")
    if resource_type and found != resource_type:
        return {}, Issue(f"{found}.resourceType", "invalid",
                         f"resourceType {found!r} does not match the URL ({resource_type})")
    return resource, None
