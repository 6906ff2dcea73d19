"""The operator console: an aiohttp application of server-rendered pages (Jinja2) with a little script.

It reads and acts through the same Store and QueueAdmin as the queue commands, inside the running gateway,
so its changes go through the gateway's own writer and its reads never wait on a write.
"""
from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.console.accounts import Account, verify_password
from gateway.console.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_KEY,
    Sessions,
    current,
    guard,
    same,
    session_of,
)
from gateway.logs import get_logger
from gateway.store import Store
from gateway.store.admin import QueueAdmin

log = get_logger(__name__)
HERE = Path(__file__).parent
# Long digit runs look like citizen or insurance numbers; timestamps (YYYYMMDDhhmm[ss]) are kept readable.
_ID_LIKE = re.compile(r"(?<!\d)(?!(?:19|20)\d{10}(?:\d{2})?(?!\d))\d{9,}")


@dataclass(frozen=True)
class ConsoleContext:
    """What the pages work with: the gateway's store, the accounts and the configured channels."""

    store: Store
    accounts: dict[str, Account]
    channels: dict[str, bool]  # channel name: enabled

    def admin(self, request: web.Request) -> QueueAdmin:
        """The queue operations on behalf of the logged-in account, named as such in the audit trail."""
        return QueueAdmin(self.store, f"{current(request).account.name}@console")


CONTEXT_KEY = web.AppKey("console_context", ConsoleContext)


def redact(text: str) -> str:
    """Text fit for a page without "show content": id-like digit runs masked."""
    return _ID_LIKE.sub("[redacted]", text)


def when(timestamp: float | None) -> str:
    """A time in the server's zone, to the second, with its offset."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d\u00a0%H:%M:%S\u00a0%z")  # no wrap


def ago(timestamp: float | None, now: float | None = None) -> str:
    """How long ago, roughly, for an operator scanning a table."""
    if not timestamp:
        return "never"
    seconds = max(0.0, (now or datetime.now().timestamp()) - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


async def login_page(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template("login.html", request, {"login_csrf": token, "error": ""})
    request.app[SESSION_KEY].set_cookie(response, LOGIN_COOKIE, token)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Check a password (off the event loop: scrypt is deliberately slow) and open a session."""
    form = await request.post()
    sessions = request.app[SESSION_KEY]
    name, password, token = (str(form.get(key, "")) for key in ("name", "password", "csrf"))
    if not same(token, request.cookies.get(LOGIN_COOKIE)):
        raise web.HTTPForbidden(text="refused: missing or wrong CSRF token; reload the login page",
                                content_type="text/plain")
    account = request.app[CONTEXT_KEY].accounts.get(name)
    stored = account.password_hash if account else "scrypt$16384$8$1$AAAA$AAAA"  # same work for unknown names
    good = await asyncio.to_thread(verify_password, password, stored)
    if sessions.locked_out(name) or account is None or not good:
        sessions.failed(name)
        log.warning("console_login_refused", account=name[:64], peer=request.remote)
        await asyncio.sleep(1.0)
        response = aiohttp_jinja2.render_template(
            "login.html", request, {"login_csrf": token, "error": "Wrong name or password (or too many tries)."},
            status=401)
        return response
    session_token, _ = sessions.open(account)
    await QueueAdmin(request.app[CONTEXT_KEY].store, f"{account.name}@console").record_event(
        "login", "console", f"role {account.role}")
    log.info("console_login", account=account.name, role=account.role, peer=request.remote)
    response = web.HTTPSeeOther("/")
    sessions.set_cookie(response, SESSION_COOKIE, session_token)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSION_KEY].close(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def _page_context(request: web.Request) -> dict[str, Any]:
    """What every page's frame shows: who is logged in, their role and the CSRF token for its forms."""
    session = session_of(request)
    return {"session": session, "csrf": session.csrf if session else "", "path": request.path}


def create_console_app(store: Store, accounts: dict[str, Account], channels: dict[str, bool], *,
                       idle_seconds: float, secure_cookies: bool) -> web.Application:
    """The console application; the caller serves it on the console's own port."""
    from gateway.console import pages

    app = web.Application(middlewares=[guard], client_max_size=1024 * 1024)
    app[SESSION_KEY] = Sessions(idle_seconds, secure_cookies)
    app[CONTEXT_KEY] = ConsoleContext(store, accounts, channels)
    environment = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        context_processors=[_page_context],
        undefined=jinja2.StrictUndefined)
    environment.filters.update(when=when, ago=ago, redact=redact)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static/", HERE / "static")
    pages.add_routes(app)
    return app
