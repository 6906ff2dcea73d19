"""The console's pages: dashboard, channels, message browser, one message, dead letters, audit trail.

Pages show metadata only; a message's content appears on an operator's explicit "show content", which the
store audits. Every change (retry, discard, retry now) is a POST checked for CSRF and role by security.py.
"""
from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway.console.app import CONTEXT_KEY
from gateway.console.security import require_operator
from gateway.store import AdminError, AuditFilter, ItemRef, MessageFilter
from gateway.store.admin import DeadSelection

WINDOW_SECONDS = 3600.0  # the dashboard's "last hour"
PAGE_SIZE = 100
MESSAGE_STATES = ("received", "mapped", "dead", "discarded")


def _text(request: web.Request, key: str) -> str:
    return request.query.get(key, "").strip()


def _time(text: str, field: str) -> float | None:
    """A date or date-and-time typed in the server's zone (as an <input type=datetime-local> sends it)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise web.HTTPBadRequest(text=f"{field}: not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


def _number(text: str, field: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise web.HTTPBadRequest(text=f"{field}: not a number")
    return int(text)


async def dashboard(request: web.Request) -> web.StreamResponse:
    """Per feed and per channel, the last hour at a glance, with the queues and the oldest waiting item."""
    context = request.app[CONTEXT_KEY]
    admin = context.admin(request)
    now = time.time()
    feeds = await admin.feeds(now - WINDOW_SECONDS)
    channels = await admin.channels(now - WINDOW_SECONDS)
    depths = await context.store.queue_depths()
    oldest = await context.store.oldest_pending_received_at()
    return aiohttp_jinja2.render_template("dashboard.html", request, {
        "feeds": feeds, "channels": channels, "now": now, "depths": sorted(depths.items()),
        "oldest": oldest, "window_minutes": WINDOW_SECONDS / 60})


async def channels_page(request: web.Request) -> web.StreamResponse:
    """Each configured channel's state, backlog and oldest undelivered item, with "retry now"."""
    context = request.app[CONTEXT_KEY]
    found = {c.channel: c for c in await context.admin(request).channels(time.time() - WINDOW_SECONDS)}
    names = sorted(set(context.channels) | set(found))
    rows = [(name, context.channels.get(name, False), found.get(name)) for name in names]
    return aiohttp_jinja2.render_template("channels.html", request, {
        "rows": rows, "now": time.time(), "notice": _text(request, "notice")})


async def retry_now(request: web.Request) -> web.StreamResponse:
    require_operator(request)
    context = request.app[CONTEXT_KEY]
    channel = request.match_info["channel"]
    if channel not in context.channels:
        raise web.HTTPNotFound(text=f"no channel {channel}")
    count = await context.admin(request).retry_now(channel)
    raise web.HTTPSeeOther(f"/channels?notice={channel}: {count} pending submissions due now")


def _message_filter(request: web.Request) -> MessageFilter:
    state = _text(request, "state")
    if state and state not in MESSAGE_STATES:
        raise web.HTTPBadRequest(text=f"state: one of {', '.join(MESSAGE_STATES)}")
    return MessageFilter(
        control_id=_text(request, "control_id"), sender=_text(request, "sender"),
        message_type=_text(request, "type"), state=state,
        since=_time(_text(request, "since"), "since"), until=_time(_text(request, "until"), "until"),
        document_id=_text(request, "document"), before_id=_number(_text(request, "before"), "before"),
        limit=PAGE_SIZE)


async def messages_page(request: web.Request) -> web.StreamResponse:
    """Search the inbox by control id, sender, type, state, date range or document key."""
    query = _message_filter(request)
    rows = await request.app[CONTEXT_KEY].admin(request).find(query)
    older = dict(request.query, before=str(rows[-1].id)) if len(rows) == PAGE_SIZE else None
    return aiohttp_jinja2.render_template("messages.html", request, {
        "rows": rows, "q": request.query, "states": MESSAGE_STATES, "older": older})


async def message_page(request: web.Request) -> web.StreamResponse:
    """One message: its ACK, document versions, submissions with every attempt, receipts and audit trail."""
    admin = request.app[CONTEXT_KEY].admin(request)
    message_id = int(request.match_info["id"])
    try:
        detail = await admin.message(message_id)
    except AdminError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    refs = [ItemRef("inbox", message_id)] + [ItemRef("outbox", s.id) for s in detail.submissions]
    history = [action for ref in refs for action in await admin.actions(ref)]
    history.sort(key=lambda action: action.at)
    return aiohttp_jinja2.render_template("message.html", request, {
        "d": detail, "m": detail.message, "ack": detail.ack.decode("utf-8", errors="replace"),
        "history": history, "now": time.time()})


async def message_content(request: web.Request) -> web.StreamResponse:
    """The message as received: personal data, shown to operators only, the viewing audited."""
    require_operator(request)
    admin = request.app[CONTEXT_KEY].admin(request)
    message_id = int(request.match_info["id"])
    try:
        payload = await admin.payload(ItemRef("inbox", message_id))
        error = ""
    except AdminError as exc:
        payload, error = b"", str(exc)
    return aiohttp_jinja2.render_template("content.html", request, {
        "message_id": message_id, "error": error,
        "segments": payload.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r").split("\r")})


def _selection(values: Any) -> DeadSelection:
    queue = str(values.get("queue", "")).strip()
    if queue not in ("", "inbox", "outbox"):
        raise web.HTTPBadRequest(text="queue: inbox or outbox")
    return DeadSelection(queue=queue, kind=str(values.get("kind", "")).strip(),
                         reason=str(values.get("reason", "")).strip(),
                         failed_since=_time(str(values.get("since", "")).strip(), "since"),
                         failed_until=_time(str(values.get("until", "")).strip(), "until"))


async def dead_page(request: web.Request) -> web.StreamResponse:
    """Dead letters of both queues, filtered; retry or discard a selection or everything matching."""
    items = await request.app[CONTEXT_KEY].admin(request).select_dead(_selection(request.query))
    return aiohttp_jinja2.render_template("dead.html", request, {"items": items, "q": request.query})


async def change_dead(request: web.Request) -> web.StreamResponse:
    """Bulk retry or discard: the ticked items, or every dead item the filter matches."""
    require_operator(request)
    admin = request.app[CONTEXT_KEY].admin(request)
    form = await request.post()
    action, _, scope = str(form.get("action", "")).partition("-")
    if action not in ("retry", "discard") or scope not in ("", "matching"):
        raise web.HTTPBadRequest(text="action: retry, discard, retry-matching or discard-matching")
    if scope == "matching":
        refs = [item.ref for item in await admin.select_dead(_selection(form))]
    else:
        try:
            refs = [ItemRef.parse(str(value)) for value in form.getall("ref", [])]
        except AdminError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    outcomes = await admin.change_many(action, refs, str(form.get("note", "")).strip()) if refs else []
    return aiohttp_jinja2.render_template("changes.html", request, {"action": action, "outcomes": outcomes})


def _audit_filter(request: web.Request, limit: int) -> AuditFilter:
    return AuditFilter(operator=_text(request, "operator"), action=_text(request, "action"),
                       item=_text(request, "item"), since=_time(_text(request, "since"), "since"),
                       until=_time(_text(request, "until"), "until"), limit=limit)


async def audit_page(request: web.Request) -> web.StreamResponse:
    """Who did what to which item, newest first."""
    rows = await request.app[CONTEXT_KEY].admin(request).audit(_audit_filter(request, 500))
    return aiohttp_jinja2.render_template("audit.html", request, {
        "rows": rows, "q": request.query, "export": request.query_string})


async def audit_csv(request: web.Request) -> web.StreamResponse:
    """The filtered audit trail as CSV, for a ticket or an inspection."""
    rows = await request.app[CONTEXT_KEY].admin(request).audit(_audit_filter(request, 1_000_000))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "operator", "action", "item", "detail"])
    writer.writerows([datetime.fromtimestamp(row.at, UTC).isoformat(timespec="seconds"), row.operator,
                      row.action, row.item, row.detail] for row in rows)
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="healthbook-audit.csv"'})


def add_routes(app: web.Application) -> None:
    """Mount the pages."""
    app.router.add_get("/", dashboard)
    app.router.add_get("/channels", channels_page)
    app.router.add_post("/channels/{channel}/retry-now", retry_now)
    app.router.add_get("/messages", messages_page)
    app.router.add_get(r"/messages/{id:\d+}", message_page)
    app.router.add_post(r"/messages/{id:\d+}/content", message_content)
    app.router.add_get("/dead", dead_page)
    app.router.add_post("/dead", change_dead)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/audit.csv", audit_csv)
