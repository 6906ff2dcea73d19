"""The emulator's HTTP face: both national channels on one port, fault injection and control endpoints.

Faults apply to every portal call (every path outside `/_emulator/`), in this order: a 500 (fail_rate),
a 429 with Retry-After (rate_limit_rate); then the call is processed, and its answer may come slow_seconds late (slow_rate) or
never, the connection dropped (drop_rate): either way the portal has accepted a document whose receipt
the client may never see, the hardest case for exactly-once delivery. Token expiry: tokens live token_ttl seconds, and
`POST /_emulator/faults {"expire_tokens": true}` revokes every token issued so far.
"""
from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from adapters.portal.emulator.bhxh import add_bhxh_routes
from adapters.portal.emulator.state import EmulatorConfig, EmulatorState, transaction_id
from adapters.portal.emulator.validate import Rejection, check_hub_message
from adapters.portal.wire import HUB_ACCEPTED, IDEMPOTENCY_HEADER

STATE = web.AppKey("state", EmulatorState)
CONTROL_PREFIX = "/_emulator/"
MAX_HUB_BATCH = 100
BHXH_PATHS = ("/api/token/take", "/api/qd130/checkInKcbQd3176", "/api/qd130/guiHoSoXmlQD3176")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE]


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn a share of portal calls into 500s, 429s, slow answers or dropped connections."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = _state(request)
    faults = state.faults
    if state.draw(faults.fail_rate):
        state.counters.server_errors += 1
        return web.json_response({"maKetQua": "500", "code": "500", "message": "emulated server error"}, status=500)
    if state.draw(faults.rate_limit_rate):
        state.counters.rate_limited += 1
        return web.json_response({"code": "429", "message": "too many requests"}, status=429,
                                 headers={"Retry-After": str(math.ceil(faults.retry_after))})
    counters = state.counters
    counters.in_flight += 1
    counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
    try:
        response = await handler(request)
        if state.draw(faults.slow_rate):
            counters.slowed += 1
            await asyncio.sleep(faults.slow_seconds)
    finally:
        counters.in_flight -= 1
    if state.draw(faults.drop_rate) and request.transport is not None:
        counters.dropped += 1
        request.transport.abort()
        raise web.HTTPServiceUnavailable()  # never reaches the client: the connection is gone
    return response


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def hub_login(request: web.Request) -> web.Response:
    """Hub login: username and password give a bearer token."""
    state = _state(request)
    body = await _json_object(request)
    if body.get("username") != state.config.username or body.get("password") != state.config.password:
        return web.json_response({"code": "401", "message": "invalid credentials"}, status=401)
    state.counters.logins += 1
    return web.json_response({"access_token": state.issue_token(), "token_type": "Bearer",
                              "expires_in": int(state.faults.token_ttl)})


def _hub_outcome(state: EmulatorState, message: Any, idempotency_key: str | None) -> dict[str, Any]:
    """Validate and record one hub message; its receipt, the original one for a retransmission, or a refusal."""
    state.counters.received += 1
    try:
        header = check_hub_message(message, state.config.cert_pem)["header"]
        msg_id = str(header["msg_id"])
        if idempotency_key is not None and idempotency_key != msg_id:
            raise Rejection(f"{IDEMPOTENCY_HEADER} must equal header.msg_id")
    except Rejection as exc:
        state.counters.rejected += 1
        state.counters.signature_failures += int(exc.signature)
        header = message.get("header") if isinstance(message, dict) else None
        msg_id = header.get("msg_id") if isinstance(header, dict) else None
        return {"code": "400", "message": exc.reason, "msg_id": msg_id}
    return state.seen("hub", msg_id) or state.accept("hub", msg_id, {
        "code": HUB_ACCEPTED, "message": "accepted", "msg_id": msg_id, "transaction_id": transaction_id("HUB"),
        "received_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


async def hub_push(request: web.Request) -> web.Response:
    """Hub data-sync push: one signed message (or a JSON array of them), one receipt per msg_id."""
    state = _state(request)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not state.token_valid(token):
        state.counters.token_refusals += 1
        return web.json_response({"code": "401", "message": "token expired or invalid"}, status=401)
    if request.headers.get("service-type") != state.config.service_type:
        return web.json_response({"code": "400", "message": f"service-type must be {state.config.service_type}"},
                                 status=400)
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    if isinstance(body, list):
        if not 1 <= len(body) <= MAX_HUB_BATCH:
            return web.json_response({"code": "400", "message": f"a batch holds 1 to {MAX_HUB_BATCH} messages"},
                                     status=400)
        results = [_hub_outcome(state, message, None) for message in body]
        return web.json_response({"code": HUB_ACCEPTED, "message": "batch processed", "results": results})
    outcome = _hub_outcome(state, body, request.headers.get(IDEMPOTENCY_HEADER))
    return web.json_response(outcome, status=200 if outcome["code"] == HUB_ACCEPTED else 400)


async def get_stats(request: web.Request) -> web.Response:
    """Counts that let tests and benchmarks prove nothing was lost or sent twice."""
    return web.json_response(_state(request).stats())


async def set_faults(request: web.Request) -> web.Response:
    """Change fault rates at run time; `expire_tokens: true` revokes every issued token."""
    state = _state(request)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        expire = bool(changes.pop("expire_tokens", False))
        state.faults = state.faults.updated(changes)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if expire:
        state.expire_tokens()
    return web.json_response(asdict(state.faults))


async def get_faults(request: web.Request) -> web.Response:
    """The fault settings in force."""
    return web.json_response(asdict(_state(request).faults))


async def reset(request: web.Request) -> web.Response:
    """Forget all received documents, tokens and counters; restore the start-up faults."""
    _state(request).reset()
    return web.json_response({"reset": True})


def create_emulator_app(config: EmulatorConfig, *, bhxh_paths: tuple[str, str, str] | None = None,
                        hub_paths: tuple[str, str] | None = None) -> web.Application:
    """The emulator as an aiohttp app, so tests and `demo` run it in-process on any port."""
    login_path, push_path = hub_paths or ("/api/auth/login", "/api/platform/data-sync/push")
    app = web.Application(middlewares=[inject_faults], client_max_size=64 * 1024 * 1024)
    app[STATE] = EmulatorState(config)
    add_bhxh_routes(app, app[STATE], bhxh_paths or BHXH_PATHS)
    app.router.add_post(login_path, hub_login)
    app.router.add_post(push_path, hub_push)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/reset", reset)
    return app
