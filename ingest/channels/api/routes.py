"""The HTTP API's operations (``api.listen``) and the application that serves them.

Every ``/api/v1`` request carries a channel's bearer token
(:mod:`ingest.channels.api.bearer`) and sees only that channel's mailboxes:
another channel's ticket, attachment or reply is a 404, exactly like one
that does not exist, so ids leak nothing. Errors are problem documents
(:mod:`ingest.channels.api.problems`). Answers are the documents of
:mod:`storage.documents`, the ones the CLI's ``--json`` and webhooks carry.
The OpenAPI document is served at ``/openapi.json`` and checked into the
repository (``python -m ingest.channels.api > openapi.json`` writes it after
a change).

Request bodies are bounded twice: by bytes before parsing (413) and by the
models' field limits after (422). Attachments are served as downloads only
(``Content-Disposition: attachment`` with an RFC 6266 ``filename*``,
``nosniff``, a sandboxing CSP), never rendered by the browser under our
origin.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import inscriptis
from fastapi import APIRouter, Depends, FastAPI, Path, Query
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col
from starlette.responses import JSONResponse, Response

from ingest.channels.api.bearer import Access, Auth, Context, Ctx
from ingest.channels.api.problems import (
    BodyLimit,
    Problem,
    answers,
    install_handlers,
    not_found,
)
from ingest.channels.api.schemas import (
    HealthOut,
    RejectionList,
    ReplyIn,
    TicketPage,
    TicketPatch,
)
from ingest.channels.emit import ticket_document
from ingest.console.context import ROOT as CONSOLE
from ingest.console.webapp import create_console
from ingest.ops.metrics import HealthCheck
from ingest.outbound.compose import InvalidReply
from ingest.outbound.replies import queue_reply
from policy.config.model import Config
from policy.message.attachments import clean_filename
from storage import rejections as rejection_log
from storage.documents import ReplyOut, TicketOut, TicketStatus, TicketSummaryOut, TraceOut
from storage.mailtrace import trace as trace_of
from storage.models import Attachment, Reply, Ticket, TicketMessage, aware, utcnow
from storage.outbox import reply_view
from storage.views import ticket_summary

PREFIX = "/api/v1"
MAX_BODY = 2 * 1024 * 1024
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?$"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name as RFC 6266 ``filename*``.

    Path parts go (a name is not a path) and the rest is
    :func:`policy.message.attachments.clean_filename`, what the scanner checked (stored
    names already are: this keeps older rows in line, and CR/LF out); quotes
    and backslashes cannot break the quoted fallback because everything
    outside printable ASCII becomes ``_`` there.
    """
    name = clean_filename(filename.replace("\\", "/").rsplit("/", 1)[-1]) or "attachment"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def safe_content_type(value: str) -> str:
    value = value.strip().lower()
    return value if _CONTENT_TYPE.match(value) else "application/octet-stream"


def _instant(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (numbers are not times, unlike pydantic's)."""
    try:
        return aware(datetime.fromisoformat(text)).astimezone(UTC)
    except ValueError:
        raise Problem(400, "invalid_parameter", f"{text!r} is not an ISO 8601 time") from None


def encode_cursor(updated_at: datetime, ticket_id: int) -> str:
    raw = json.dumps([aware(updated_at).isoformat(), ticket_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, ticket_id = json.loads(raw)
        if not isinstance(ticket_id, int) or isinstance(ticket_id, bool):
            raise ValueError("bad id")
        return aware(datetime.fromisoformat(when)).astimezone(UTC), ticket_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "invalid_cursor", "the cursor is not one this API handed out") from None


# --- the application ------------------------------------------------------------


def _session(context: Ctx) -> Iterator[Session]:
    with Session(context.engine, expire_on_commit=False) as session:
        yield session


# Closed before the response goes out, never after the engine may be gone.
Db = Annotated[Session, Depends(_session, scope="function")]
Id = Annotated[int, Path(ge=1, le=2**62)]

# The body limit (BodyLimit) stands before every route, so every operation can
# answer its 413, also one without a request body when a client declares one.
router = APIRouter(responses=answers(413))


def _visible_ticket(session: Session, access: Access, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or not access.sees(ticket.mailbox):
        raise not_found("ticket")
    return ticket


@router.get(f"{PREFIX}/tickets", response_model=TicketPage, responses=answers(400, 401, 422))
def list_tickets(
    access: Auth,
    session: Db,
    mailbox: Annotated[str | None, Query(max_length=320)] = None,
    status: TicketStatus | None = None,
    updated_since: Annotated[
        str | None,
        Query(pattern=_ISO_TIME, description="ISO 8601 date or time; without a zone, UTC"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TicketPage:
    """Tickets by last update, oldest first: poll with ``updated_since``, page with ``cursor``."""
    boxes = access.mailboxes & {mailbox.lower()} if mailbox is not None else access.mailboxes
    query = select(Ticket).where(col(Ticket.mailbox).in_(sorted(boxes)))
    if status is not None:
        query = query.where(col(Ticket.status) == status)
    if updated_since is not None:
        query = query.where(col(Ticket.updated_at) >= _instant(updated_since))
    if cursor is not None:
        after, after_id = decode_cursor(cursor)
        query = query.where(
            or_(
                col(Ticket.updated_at) > after,
                and_(col(Ticket.updated_at) == after, col(Ticket.id) > after_id),
            )
        )
    rows = session.scalars(
        query.order_by(col(Ticket.updated_at), col(Ticket.id)).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    counts: dict[int, int] = {
        ticket_id: count
        for ticket_id, count in session.execute(
            select(col(TicketMessage.ticket_id), func.count())
            .where(col(TicketMessage.ticket_id).in_([t.id for t in page]))
            .group_by(col(TicketMessage.ticket_id))
        )
    }
    last = page[-1] if len(rows) > limit else None
    return TicketPage(
        tickets=[ticket_summary(t, counts.get(t.id or 0, 0)) for t in page],
        next_cursor=encode_cursor(last.updated_at, last.id or 0) if last else None,
    )


@router.get(
    f"{PREFIX}/tickets/{{ticket_id}}", response_model=TicketOut, responses=answers(401, 404, 422)
)
def get_ticket(access: Auth, session: Db, ticket_id: Id) -> TicketOut:
    """One ticket with its messages (sanitised HTML, attachment links) and replies."""
    _visible_ticket(session, access, ticket_id)
    document = ticket_document(session, access.config, ticket_id)
    assert document is not None
    return document


@router.patch(
    f"{PREFIX}/tickets/{{ticket_id}}",
    response_model=TicketSummaryOut,
    responses=answers(400, 401, 404, 422),
)
def patch_ticket(access: Auth, session: Db, ticket_id: Id, change: TicketPatch) -> TicketSummaryOut:
    """Set the status; a customer's next message reopens a pending or closed ticket."""
    with session.begin():
        ticket = _visible_ticket(session, access, ticket_id)
        if ticket.status != change.status:
            ticket.status = change.status
            ticket.updated_at = utcnow()
            session.add(ticket)
        count = session.scalar(
            select(func.count()).where(col(TicketMessage.ticket_id) == ticket_id)
        )
    return ticket_summary(ticket, count or 0)


@router.post(
    f"{PREFIX}/tickets/{{ticket_id}}/replies",
    response_model=ReplyOut,
    status_code=202,
    responses=answers(400, 401, 404, 422),
)
def post_reply(
    access: Auth, session: Db, ticket_id: Id, reply: ReplyIn, response: Response
) -> ReplyOut:
    """Queue a reply for the mailbox's SMTP server; its state says how delivery went."""
    text = reply.text if (reply.text or "").strip() else inscriptis.get_text(reply.html or "")
    try:
        with session.begin():
            _visible_ticket(session, access, ticket_id)
            queued = queue_reply(
                session, access.config, ticket_id, text=text or "", html=reply.html, cc=reply.cc
            )
            row = session.get(Reply, queued.reply_id)
            assert row is not None
    except InvalidReply as exc:
        raise Problem(422, "reply_refused", "the reply cannot be sent", str(exc)) from None
    response.headers["Location"] = f"{PREFIX}/replies/{queued.reply_id}"
    return reply_view(row)


@router.get(
    f"{PREFIX}/replies/{{reply_id}}", response_model=ReplyOut, responses=answers(401, 404, 422)
)
def get_reply(access: Auth, session: Db, reply_id: Id) -> ReplyOut:
    """A reply's delivery state: queued, sending, sent, retrying or failed."""
    row = session.get(Reply, reply_id)
    if row is None or not access.sees(row.mailbox):
        raise not_found("reply")
    return reply_view(row)


@router.get(
    f"{PREFIX}/attachments/{{attachment_id}}",
    response_class=Response,
    responses={
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the bytes, with the attachment's own content type",
        },
        **answers(401, 404, 422),
    },
)
def get_attachment(access: Auth, session: Db, attachment_id: Id) -> Response:
    """The attachment's bytes, always as a download."""
    row = session.execute(
        select(Attachment, col(Ticket.mailbox))
        .join(TicketMessage, col(TicketMessage.id) == col(Attachment.ticket_message_id))
        .join(Ticket, col(Ticket.id) == col(TicketMessage.ticket_id))
        .where(col(Attachment.id) == attachment_id)
    ).first()
    if row is None or not access.sees(row[1]):
        raise not_found("attachment")
    attachment: Attachment = row[0]
    return Response(
        content=bytes(attachment.data),
        media_type=safe_content_type(attachment.content_type),
        headers={
            "Content-Disposition": content_disposition(attachment.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )


@router.get(f"{PREFIX}/rejections", response_model=RejectionList, responses=answers(400, 401, 422))
def list_rejections(
    access: Auth,
    session: Db,
    since: Annotated[str | None, Query(max_length=64, description="30m, 24h, 7d or ISO")] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    sender: Annotated[str | None, Query(max_length=512)] = None,
    message_id: Annotated[str | None, Query(max_length=998)] = None,
    mailbox: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Refusals for this channel's mailboxes, newest first (the operators' search)."""
    try:
        start = rejection_log.parse_time(since) if since else None
        end = rejection_log.parse_time(until) if until else None
    except ValueError as exc:
        raise Problem(400, "invalid_parameter", "since/until is not a time", str(exc)) from None
    refusal = rejection_log.unknown_reason(reason)
    if refusal is not None:
        raise Problem(400, "invalid_parameter", "reason is not a reason code", refusal)
    boxes = access.mailboxes & {mailbox.lower()} if mailbox is not None else access.mailboxes
    found: list[dict[str, Any]] = []
    for box in sorted(boxes):
        query = rejection_log.RejectionFilter(
            since=start, until=end, message_id=message_id, sender=sender, mailbox=box,
            reason=reason,
        )  # fmt: skip
        found += rejection_log.search(session, query, limit=limit)
    unique = {r["id"]: r for r in found}.values()
    newest = sorted(unique, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return {"rejections": newest[:limit]}


@router.get(
    f"{PREFIX}/trace/{{message_id:path}}", response_model=TraceOut, responses=answers(401, 404, 422)
)
def trace(
    access: Auth, session: Db, message_id: Annotated[str, Path(min_length=1, max_length=998)]
) -> dict[str, Any]:
    """What became of a Message-ID (or trace id) at this channel's mailboxes."""

    def visible(ticket_id: int) -> bool:
        ticket = session.get(Ticket, ticket_id)
        return ticket is not None and access.sees(ticket.mailbox)

    story = _scoped_trace(trace_of(session, message_id), access, visible)
    if not story["found"]:
        raise not_found("message")
    return story


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def healthz(context: Ctx) -> Response:
    """200 when every part is working, 503 naming the one that is not; no token needed."""
    checks = await context.health() if context.health is not None else {}
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "fail", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **answers(404),
    },
)
def metrics(context: Ctx) -> Response:
    """The Prometheus metrics, when ``metrics.listen`` is configured."""
    if context.registry is None or not context.current().metrics.listen:
        raise Problem(404, "metrics_off", "metrics are not enabled (metrics.listen)")
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    current: Callable[[], Config],
    engine: Engine,
    *,
    health: HealthCheck | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    app = FastAPI(
        title="firstline",
        version="1",
        summary="Tickets from mail, replies to mail, for one helpdesk channel per token.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = Context(current, engine, health, registry)
    app.include_router(router)
    # The operators' console (answers 404 unless ``console:`` is configured); a
    # mounted app, so none of its pages is in the OpenAPI document.
    app.mount(CONSOLE, create_console(current, engine))
    install_handlers(app, router)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


def _scoped_trace(
    story: dict[str, Any], access: Access, visible: Callable[[int], bool]
) -> dict[str, Any]:
    """Only what concerns the channel's mailboxes; nothing at all if none is concerned."""

    def ours(entry: dict[str, Any]) -> bool:
        if entry.get("mailbox") is not None:
            return access.sees(str(entry["mailbox"]))
        if isinstance(entry.get("ticket_id"), int):
            return visible(entry["ticket_id"])
        recipients = entry.get("rcpt_to")
        return isinstance(recipients, list) and any(access.sees(str(r)) for r in recipients)

    status = [s for s in story["status"] if ours(s)]
    events = []
    for event in story["events"]:
        if not ours(event):
            continue
        if isinstance(event.get("rcpt_to"), list):
            event = {**event, "rcpt_to": [r for r in event["rcpt_to"] if access.sees(str(r))]}
        events.append(event)
    trace_ids = sorted({str(e["trace_id"]) for e in events if e.get("trace_id")})
    return {
        **story,
        "trace_ids": trace_ids,  # only the copies this channel may see
        "found": bool(status or events),
        "status": status,
        "events": events,
    }
