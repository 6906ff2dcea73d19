"""Console sessions, CSRF protection, role checks and security headers.

A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure when the console speaks TLS),
held in memory only: a restart logs everyone out. Every POST must carry the session's CSRF token in its
form (`csrf`); the login form, before any session exists, carries a token matching a cookie of its own.
Failed logins slow down, then lock the name out for a while.
"""
from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import web

from gateway.console.accounts import Account

SESSION_COOKIE = "hbgw_console"
LOGIN_COOKIE = "hbgw_login"
MAX_FAILURES = 5
LOCKOUT_SECONDS = 300.0
PUBLIC_PATHS = ("/login", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTENT_SECURITY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@dataclass
class Session:
    account: Account
    csrf: str
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Logged-in operators by session token, each expiring after an idle period."""

    def __init__(self, idle_seconds: float, secure_cookies: bool) -> None:
        self._idle = idle_seconds
        self.secure_cookies = secure_cookies
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, tuple[int, float]] = {}

    def open(self, account: Account) -> tuple[str, Session]:
        """A new session for an account that just proved its password."""
        token = secrets.token_urlsafe(32)
        session = self._sessions[token] = Session(account, secrets.token_urlsafe(32))
        self._failures.pop(account.name, None)
        return token, session

    def find(self, token: str | None) -> Session | None:
        """The live session of a cookie, its idle clock restarted; None when unknown or expired."""
        now = time.monotonic()
        for stale in [key for key, s in self._sessions.items() if now - s.last_seen > self._idle]:
            del self._sessions[stale]
        session = self._sessions.get(token or "")
        if session is not None:
            session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        """Log out."""
        self._sessions.pop(token or "", None)

    def locked_out(self, name: str) -> bool:
        """Whether a name has failed too often lately to be tried again yet."""
        count, since = self._failures.get(name, (0, 0.0))
        if count >= MAX_FAILURES and time.monotonic() - since < LOCKOUT_SECONDS:
            return True
        if count >= MAX_FAILURES:
            self._failures.pop(name, None)
        return False

    def failed(self, name: str) -> None:
        """Count a failed login for a name."""
        count, _ = self._failures.get(name, (0, 0.0))
        self._failures[name] = (count + 1, time.monotonic())

    def set_cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        """A cookie scripts cannot read and other sites cannot send."""
        response.set_cookie(name, value, httponly=True, samesite="Strict", secure=self.secure_cookies, path="/")


SESSION_KEY = web.AppKey("console_sessions", Sessions)


def same(a: str | None, b: str | None) -> bool:
    """Compare two tokens in constant time; a missing one matches nothing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


# The logged-in session of the request being handled (each request runs in its own task and context).
_SESSION: ContextVar[Session | None] = ContextVar("console_session", default=None)


def session_of(_request: web.Request) -> Session | None:
    """The session of a request, None on the public pages (login, static files)."""
    return _SESSION.get()


def current(request: web.Request) -> Session:
    """The request's session (the middleware let only logged-in requests through)."""
    session = session_of(request)
    if session is None:
        raise web.HTTPForbidden(text="refused: not logged in", content_type="text/plain")
    return session


def require_operator(request: web.Request) -> Session:
    """The session, if its role may change queues or see content; a 403 otherwise."""
    session = current(request)
    if not session.account.may_act:
        raise web.HTTPForbidden(text=f"refused: the role {session.account.role} may look but not act;"
                                     " ask an operator", content_type="text/plain")
    return session


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log-in required outside the public paths; CSRF checked on every POST; security headers on all."""
    sessions = request.app[SESSION_KEY]
    if not request.path.startswith(PUBLIC_PATHS):
        session = sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPForbidden(text="refused: not logged in (or the session expired)", content_type="text/plain")
        _SESSION.set(session)
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not same(token if isinstance(token, str) else None, session.csrf):
                raise web.HTTPForbidden(text="refused: missing or wrong CSRF token; reload the page and try again",
                                        content_type="text/plain")
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response
