"""The console's pages: each reads through the storage functions the CLI uses."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response, StreamingResponse

from ingest.channels.emit import ticket_document
from ingest.console import auth
from ingest.console.context import ROOT, Form, Refused, Signed, Ui, checked, safe_next, secure
from ingest.console.render import chart, show
from ingest.ops.lookup import where_is
from ingest.outbound.compose import InvalidReply, parse_address
from ingest.outbound.sendtest import find_mailbox, send_test
from policy.antivirus import scan_message_bytes
from policy.message.mime import parse_message
from storage import events as event_store
from storage import outbox, status
from storage import quarantine as held
from storage import rejections as rejection_log
from storage.models import EventState, utcnow

router = APIRouter(include_in_schema=False)
Id = Annotated[int, Path(ge=1, le=2**62)]
LIVE_SECONDS = 300.0  # then the browser reconnects (Last-Event-ID), so no stream lives forever
LIVE_POLL = 0.5


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"{ROOT}{path}", 303)


def _db(ui: Ui) -> Session:
    return Session(ui.engine, expire_on_commit=False)


# --- signing in and out ---------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/login")
def login_page(request: Request, ui: Ui, next: Annotated[str | None, Query()] = None) -> Response:
    ui.settings()
    return _login_form(request, ui, safe_next(next))


def _login_form(
    request: Request, ui: Ui, next_path: str, status_code: int = 200, error: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    # Login CSRF: the form's token must match a cookie this page set.
    token = secrets.token_urlsafe(24)
    response = ui.page("login.html", None, status_code, headers, next=next_path, token=token,
                       error=error)  # fmt: skip
    response.set_cookie(auth.LOGIN_COOKIE, token, path=ROOT, httponly=True, samesite="strict",
                        secure=secure(request), max_age=3600)  # fmt: skip
    return response


@router.post("/login")
def login(request: Request, ui: Ui, fields: Form) -> Response:
    settings = ui.settings()
    next_path = safe_next(fields.get("next"))
    if not auth.same_token(request.cookies.get(auth.LOGIN_COOKIE, ""), fields.get("token")):
        return _login_form(request, ui, next_path, 403, "The login form expired; try again.")
    name = fields.get("user", "")[:64]
    keys = [f"ip:{_client(request)}", f"user:{name.strip().lower()}"]
    wait = ui.limiter.wait(keys, settings.login_attempts, settings.login_window)
    if wait > 0:
        message = f"Too many failed logins; try again in {int(wait) + 1} seconds."
        headers = {"Retry-After": str(int(wait) + 1)}
        return _login_form(request, ui, next_path, 429, message, headers)
    user = auth.authenticate(settings, name, fields.get("password", ""))
    if user is None:
        ui.limiter.failed(keys, settings.login_attempts)
        return _login_form(request, ui, next_path, 401, "Wrong user name or password.")
    ui.limiter.succeeded(keys[1])
    token, _ = ui.sessions.create(user.name)
    response = RedirectResponse(next_path, 303)
    response.set_cookie(auth.COOKIE, token, path=ROOT, httponly=True, samesite="strict",
                        secure=secure(request))  # fmt: skip
    response.delete_cookie(auth.LOGIN_COOKIE, path=ROOT, httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(ui: Ui, who: Signed, fields: Form) -> Response:
    checked(who, fields, action=False)
    ui.sessions.end(who.token)
    response = _redirect("/login")
    response.delete_cookie(auth.COOKIE, path=ROOT, httponly=True, samesite="strict")
    return response


# --- overview -----------------------------------------------------------------


@router.get("/")
def overview(ui: Ui, who: Signed) -> Response:
    now = utcnow()
    with _db(ui) as session:
        summary = status.summary(session, now)
        hours = status.hourly(session, now)
        dead = event_store.depth(session).get(EventState.DEAD.value, 0)
    refusals = sorted(summary["rejections_24h"].items(), key=lambda kv: (-kv[1], kv[0]))
    return ui.page("overview.html", who, summary=summary, refusals=refusals, dead_events=dead,
                   chart=chart(hours), hours=hours, nav="overview")  # fmt: skip


# --- the rejection log -----------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """The rejection log's filters as the form sends them (empty: not filtered)."""

    since: Annotated[str, Query(max_length=64)] = ""
    until: Annotated[str, Query(max_length=64)] = ""
    reason: Annotated[str, Query(max_length=64)] = ""
    sender: Annotated[str, Query(max_length=512)] = ""
    mailbox: Annotated[str, Query(max_length=320)] = ""
    message_id: Annotated[str, Query(max_length=998)] = ""
    client_ip: Annotated[str, Query(max_length=64)] = ""

    def query(self, *, window: bool = True) -> tuple[rejection_log.RejectionFilter, str | None]:
        """As the CLI's ``rejections`` searches: 24 hours unless told otherwise (``window``)."""
        start = end = None
        try:
            if self.since and window:
                start = rejection_log.parse_time(self.since)
            elif window and not self.message_id:
                start = rejection_log.parse_time("24h")
            end = rejection_log.parse_time(self.until) if self.until else None
        except ValueError as exc:
            return rejection_log.RejectionFilter(), str(exc)
        query = rejection_log.RejectionFilter(
            since=start, until=end, message_id=self.message_id or None,
            sender=self.sender or None, mailbox=self.mailbox or None,
            reason=self.reason or None, client_ip=self.client_ip or None,
        )  # fmt: skip
        return query, None


Filters = Annotated[Search, Depends()]


def _row(view: dict[str, Any]) -> dict[str, Any]:
    """A record as the live stream sends it: the values already made visible (see show)."""
    return {
        "id": view["id"],
        "at": view["created_at"][:19].replace("T", " "),
        "stage": view["stage"],
        "reason": view["reason"],
        "client": show(f"{view['client_name'] or 'unknown'}[{view['client_ip']}]", 80),
        "from": show(view["mail_from"] or "<>", 80),
        "to": show(", ".join(view["rcpt_to"]), 80),
        "subject": show(view["subject"], 80),
        "href": f"{ROOT}/rejections/{view['id']}",
    }


@router.get("/rejections")
def rejections(
    request: Request, ui: Ui, who: Signed, search: Filters, live: bool = False
) -> Response:
    query, error = search.query()
    with _db(ui) as session:
        rows = [] if error else rejection_log.search(session, query, limit=200)
        after = rejection_log.last_id(session)
    stream = f"{ROOT}/rejections/live?{request.url.query}" if live else None
    return ui.page("rejections.html", who, rows=[_row(r) for r in rows], error=error,
                   values=asdict(search), live=live, stream=stream, after=after,
                   mailboxes=[m.address for m in ui.current().mailboxes],
                   nav="rejections")  # fmt: skip


@router.get("/rejections/live")
async def live_rejections(
    request: Request, ui: Ui, who: Signed, search: Filters,
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    """Server-sent events: each new matching refusal as it is recorded, oldest first."""
    query, _ = search.query(window=False)  # new records (by id), whatever their time
    resume = request.headers.get("last-event-id", "")
    start = int(resume) if resume.isdigit() else after

    def newer(last: int) -> list[dict[str, Any]]:
        with _db(ui) as session:
            return rejection_log.newer_than(session, query, last, limit=100)

    async def events() -> AsyncIterator[str]:
        last = start
        yield "retry: 1000\n\n"
        loop = asyncio.get_running_loop()
        ends = loop.time() + LIVE_SECONDS
        while loop.time() < ends and not await request.is_disconnected():
            for view in await asyncio.to_thread(newer, last):
                last = max(last, view["id"])
                yield f"id: {view['id']}\ndata: {json.dumps(_row(view))}\n\n"
            yield ": waiting\n\n"
            await asyncio.sleep(LIVE_POLL)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})  # fmt: skip


@router.get("/rejections/{rejection_id}")
def rejection(ui: Ui, who: Signed, rejection_id: Id) -> Response:
    with _db(ui) as session:
        record = rejection_log.detail(session, rejection_id)
    if record is None:
        raise Refused(404, f"No rejection record {rejection_id} (purged, or never written).")
    return ui.page("rejection.html", who, r=record, nav="rejections")


# --- where is my mail? -------------------------------------------------------------


@router.get("/trace")
def trace_page(ui: Ui, who: Signed, q: Annotated[str, Query(max_length=65536)] = "") -> Response:
    found = None
    if q.strip():
        with _db(ui) as session:
            found = where_is(session, q)
    return ui.page("trace.html", who, q=q, found=found, nav="trace")


@router.get("/tickets/{ticket_id}")
def ticket(ui: Ui, who: Signed, ticket_id: Id) -> Response:
    with _db(ui) as session:
        detail = ticket_document(session, ui.current(), ticket_id)
    if detail is None:
        raise Refused(404, f"No ticket {ticket_id}.")
    return ui.page("ticket.html", who, t=detail.dump(), nav="trace")


# --- quarantine ---------------------------------------------------------------------


@router.get("/quarantine")
def quarantine(ui: Ui, who: Signed) -> Response:
    with _db(ui) as session:
        rows = held.list_quarantined(session, limit=500)
    return ui.page("quarantine.html", who, rows=rows, nav="quarantine")


@router.get("/quarantine/{entry_id}")
def quarantined(ui: Ui, who: Signed, entry_id: Id) -> Response:
    with _db(ui) as session:
        try:
            detail = held.show(session, entry_id)
        except held.NotQuarantined:
            raise _not_held(entry_id) from None
        raw = held.raw_of(session, entry_id)
    parsed = parse_message(raw) if raw else None
    finding = scan_message_bytes(raw) if raw else None
    return ui.page("quarantined.html", who, q=detail, parsed=parsed, finding=finding,
                   nav="quarantine")  # fmt: skip


def _not_held(entry_id: int) -> Refused:
    return Refused(404, f"No message {entry_id} in quarantine (released or deleted?).")


def _note(fields: dict[str, str]) -> str:
    note = " ".join(fields.get("note", "").split())[:500]
    if not note:
        raise Refused(400, "Say why (the reason is kept in the audit trail with your name).")
    return note


@router.post("/quarantine/{entry_id}/{action}")
def quarantine_action(
    ui: Ui, who: Signed, fields: Form, entry_id: Id, action: Literal["release", "delete"]
) -> Response:
    """Release to the queue or delete for good, audited as ``console:NAME`` with the reason."""
    checked(who, fields)
    note = _note(fields)
    act = held.release if action == "release" else held.remove
    try:
        with _db(ui) as session, session.begin():
            act(session, entry_id, by=f"console:{who.user.name}", note=note)
    except held.NotQuarantined:
        raise _not_held(entry_id) from None
    return _redirect("/quarantine")


# --- mailboxes and the send test ------------------------------------------------------


def _mailboxes(ui: Ui) -> list[dict[str, Any]]:
    config = ui.current()
    lines = config.mailbox_lines
    return [
        {"box": box, "line": lines[i] if i < len(lines) else None}
        for i, box in enumerate(config.mailboxes)
    ]


@router.get("/mailboxes")
def mailboxes(ui: Ui, who: Signed) -> Response:
    return ui.page("mailboxes.html", who, boxes=_mailboxes(ui), source=ui.current().source,
                   result=None, nav="mailboxes")  # fmt: skip


@router.post("/mailboxes/test")
async def mailbox_test(ui: Ui, who: Signed, fields: Form) -> Response:
    checked(who, fields)
    config = ui.current()
    box = find_mailbox(config, fields.get("mailbox", ""))
    if box is None or box.smtp is None:
        raise Refused(400, "That mailbox does not exist or has no smtp section.")
    to = fields.get("to", "").strip() or None
    if to is not None:
        try:
            parse_address(to)
        except InvalidReply as exc:
            raise Refused(400, f"The test recipient is not usable: {exc}") from None
    outcome = await send_test(config, box, to, engine=ui.engine)
    return ui.page("mailboxes.html", who, boxes=_mailboxes(ui), source=config.source,
                   result={"box": box, "to": to, "outcome": outcome},
                   nav="mailboxes")  # fmt: skip


# --- outbox and webhooks ----------------------------------------------------------------


@router.get("/outbox")
def outbox_page(ui: Ui, who: Signed) -> Response:
    with _db(ui) as session:
        replies = outbox.failed_replies(session)
        dead = event_store.list_events(session, [EventState.DEAD], limit=500)
    return ui.page("outbox.html", who, replies=replies, dead=dead, nav="outbox")


@router.post("/outbox/replies/{reply_id}/retry")
def retry_reply(ui: Ui, who: Signed, fields: Form, reply_id: Id) -> Response:
    checked(who, fields)
    with _db(ui) as session, session.begin():
        done = outbox.retry_failed(session, [reply_id])
    if not done:
        raise Refused(404, f"Reply {reply_id} is not failed (any more).")
    return _redirect("/outbox")


@router.post("/outbox/events/{event_id}/retry")
def retry_event(ui: Ui, who: Signed, fields: Form, event_id: Id) -> Response:
    checked(who, fields)
    with _db(ui) as session, session.begin():
        done = event_store.replay(session, [event_id], from_states=[EventState.DEAD])
    if not done:
        raise Refused(404, f"Event {event_id} is not dead (any more).")
    return _redirect("/outbox")
