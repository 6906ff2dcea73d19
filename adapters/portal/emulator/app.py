"""The emulator's HTTP face: both national channels on one port, fault injection and control endpoints.

Faults apply to every portal call (every path outside `/_emulator/`), in this order: a 500 (fail_rate),
a 429 with Retry-After (rate_limit_rate); then the call is processed, and its answer may come slow_seconds late (slow_rate) or
never, the connection dropped (drop_rate): either way the portal has accepted a document whose receipt
the client may never see, the hardest case for exactly-once delivery. Token expiry: tokens live token_ttl seconds, and
`POST /_emulator/faults {"expire_tokens": true}` revokes every token issued so far.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from adapters.portal.emulator import hub
from adapters.portal.emulator.bhxh import add_bhxh_routes
from adapters.portal.emulator.state import EmulatorConfig, EmulatorState

STATE = web.AppKey("state", EmulatorState)
BHXH_PATHS = ("/api/token/take", "/api/qd130/checkInKcbQd3176", "/api/qd130/guiHoSoXmlQD3176")
CONTROL_PREFIX = "/_emulator/"
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
    """Hub login (QĐ 1551 PL02 §4.1), see adapters.portal.emulator.hub."""
    return await hub.login(request, _state(request))


async def hub_push(request: web.Request) -> web.Response:
    """Hub data-sync push (QĐ 1551 PL02 §4.2), see adapters.portal.emulator.hub."""
    return await hub.push(request, _state(request))


async def get_stats(request: web.Request) -> web.Response:
    """Counts that let tests and benchmarks prove nothing was lost or sent twice."""
    return web.json_response(_state(request).stats())


async def set_faults(request: web.Request) -> web.Response:
    """Change fault rates at run time; `expire_tokens: true` revokes every issued token."""
    state = _state(request)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")  # noqa: TRY004 - answered as a 400 like every bad body
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
