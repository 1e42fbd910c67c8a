"""The HTTP API helpdesks read tickets from and answer through (``api.listen``).

Every ``/api/v1`` request carries a channel's bearer token and sees only
that channel's mailboxes: another channel's ticket, attachment or reply is
a 404, exactly like one that does not exist, so ids leak nothing. Errors are
RFC 9457 problem details (``application/problem+json``) whose ``code`` is
stable and documented in the OpenAPI document, which is served at
``/openapi.json`` and checked into the repository (``openapi.json``;
``python -m ingest.channels.api.routes > openapi.json`` writes it after a change).

Request bodies are bounded twice: by bytes before parsing (413) and by the
models' field limits after (422); header-bound fields (Cc) refuse CR and LF
outright rather than folding them away. Attachments are served as
downloads only (``Content-Disposition: attachment`` with an RFC 6266
``filename*``, ``nosniff``, a sandboxing CSP), never rendered by the
browser under our origin.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import inscriptis
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.channels.emit import ticket_document
from ingest.console.site import ROOT as CONSOLE
from ingest.console.site import create_console
from ingest.ops.metrics import HealthCheck
from ingest.outbound.compose import InvalidReply, parse_address
from ingest.outbound.replies import queue_reply
from policy.config.model import ChannelConfig, Config
from policy.message.attachments import clean_filename
from storage import models
from storage import rejections as rejection_log
from storage.models import Attachment, Ticket, TicketMessage, aware, utcnow
from storage.outbox import Reply, reply_view
from storage.trace import trace as trace_of
from storage.views import ticket_summary

PREFIX = "/api/v1"
PROBLEM_TYPE = "application/problem+json"
MAX_BODY = 2 * 1024 * 1024
MAX_TEXT = 512 * 1024
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?$"

# --- problems -----------------------------------------------------------------


class Problem(Exception):
    """An error the client can act on, answered as an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers
        self.errors = errors


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:firstline:problem:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
    }
    if problem.detail is not None:
        body["detail"] = problem.detail
    if problem.errors is not None:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_TYPE
    )


def _not_found(what: str) -> Problem:
    return Problem(404, "not_found", f"no such {what}")


class ProblemOut(BaseModel):
    type: str
    title: str
    status: int
    code: str = Field(
        description="stable: unauthorized, not_found, validation_failed, invalid_cursor, "
        "invalid_parameter, bad_request, body_too_large, method_not_allowed, "
        "reply_refused, metrics_off, internal_error"
    )
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems an operation can answer."""
    return {
        status: {"model": ProblemOut, "content": {PROBLEM_TYPE: {}}, "description": "problem"}
        for status in statuses
    }


class BodyLimit:
    """413 before a byte over ``limit`` is buffered, whether or not Content-Length says so.

    FastAPI's own ``max_body_size`` answers in plain text, past the problem handlers.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413, "body_too_large", f"request bodies are limited to {self.limit} bytes"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await problem_response(too_large)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


# --- shapes -------------------------------------------------------------------


class AttachmentOut(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    download_url: str


class MessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    message_id: str
    from_: str = Field(alias="from")
    from_name: str
    to: list[str]
    cc: list[str]
    date: str | None
    subject: str
    text: str
    html: str | None = Field(description="sanitised")
    attachments: list[AttachmentOut]
    auto_reply: bool
    charset_repaired: bool
    details: dict[str, Any]
    forwarding: str
    authentication_results: str | None
    stored_message_id: int
    created_at: str | None


ReplyState = Literal["queued", "sending", "sent", "retrying", "failed", "held"]


class ReplyOut(BaseModel):
    id: int
    ticket_id: int
    message_id: str
    recipients: list[str]
    state: ReplyState
    attempts: int
    created_at: str | None
    state_changed_at: str | None
    server_reply: str | None = None
    relay_queue_id: str | None = Field(
        default=None, description="the relay's queue id from its 250 (ours is trace_id)"
    )
    sent_at: str | None = None
    last_error: str | None = None
    error_class: str | None = None
    diagnosis: dict[str, Any] | None = None
    next_attempt_at: str | None = None


# storage's enum as a Literal: the schema lists the values in place, as it always did.
TicketStatus = Literal[
    models.TicketStatus.OPEN, models.TicketStatus.PENDING, models.TicketStatus.CLOSED
]


class TicketSummaryOut(BaseModel):
    id: int
    mailbox: str
    subject: str
    requester: str
    status: TicketStatus
    created_at: str | None
    updated_at: str | None
    message_count: int = Field(description="how many messages the ticket has")


class TicketOut(TicketSummaryOut):
    messages: list[MessageOut]
    replies: list[ReplyOut]


class TicketPage(BaseModel):
    tickets: list[TicketSummaryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    html: str | None = Field(default=None, max_length=MAX_TEXT)
    cc: list[Annotated[str, Field(min_length=3, max_length=320)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        # The check compose applies when it writes the Cc field: one reading of
        # an address, so the API can neither refuse what would be sent nor accept
        # what compose would then refuse at send time.
        for value in values:
            try:
                parse_address(value)
            except InvalidReply as exc:
                raise ValueError(str(exc)) from None
        return [v.strip() for v in values]

    @model_validator(mode="after")
    def _some_body(self) -> ReplyIn:
        if not (self.text or "").strip() and not (self.html or "").strip():
            raise ValueError("a reply needs text or html")
        return self


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: TicketStatus


class RejectionOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    created_at: str
    stage: str
    reason: str
    reply: str
    mailbox: str | None
    mail_from: str
    rcpt_to: list[str]
    message_id: str | None = Field(description="<left@right>, as in every output")
    trace_id: str | None = Field(description="our queue ID, when the message was received")
    verdict: dict[str, Any] = Field(description="what verification recorded (docs/json.md)")


class RejectionList(BaseModel):
    rejections: list[RejectionOut]


class TraceOut(BaseModel):
    query: str = Field(description="the Message-ID or queue ID asked about, as given")
    message_id: str | None = Field(description="<left@right>; null for a queue ID without one")
    trace_ids: list[str] = Field(description="our queue IDs of the message")
    found: bool
    status: list[dict[str, Any]]
    events: list[dict[str, Any]]


class HealthOut(BaseModel):
    status: Literal["ok", "fail"]
    checks: dict[str, str]


# --- helpers --------------------------------------------------------------------


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


class Context:
    """What every request needs: the configuration in force, the store, health and metrics."""

    def __init__(
        self,
        current: Callable[[], Config],
        engine: Engine,
        health: HealthCheck | None,
        registry: CollectorRegistry | None,
    ) -> None:
        self.current = current
        self.engine = engine
        self.health = health
        self.registry = registry


class Access:
    """The channel a token belongs to, and the mailboxes it may see."""

    def __init__(self, config: Config, channel: ChannelConfig) -> None:
        self.config = config
        self.channel = channel
        self.mailboxes = {m.key for m in config.mailboxes if m.channel == channel.name}

    def sees(self, mailbox: str | None) -> bool:
        return mailbox is not None and mailbox.lower() in self.mailboxes


def _context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def _session(context: Annotated[Context, Depends(_context)]) -> Iterator[Session]:
    with Session(context.engine, expire_on_commit=False) as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="the channel's `token`")


def _access(
    context: Annotated[Context, Depends(_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Access:
    config = context.current()
    if credentials is None:
        raise Problem(
            401, "unauthorized", "a channel's bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    offered = credentials.credentials.encode()
    for channel in config.channels:
        if channel.token is not None and hmac.compare_digest(
            channel.token.get_secret_value().encode(), offered
        ):
            return Access(config, channel)
    # A different text, so "I forgot the header" and "I pasted the wrong token" are told apart.
    raise Problem(
        401, "unauthorized", "the bearer token is not any channel's token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )  # fmt: skip


Ctx = Annotated[Context, Depends(_context)]
Auth = Annotated[Access, Depends(_access)]
# Closed before the response goes out, never after the engine may be gone.
Db = Annotated[Session, Depends(_session, scope="function")]
Id = Annotated[int, Path(ge=1, le=2**62)]

# The body limit (BodyLimit) stands before every route, so every operation can
# answer its 413, also one without a request body when a client declares one.
router = APIRouter(responses=_errors(413))


def _visible_ticket(session: Session, access: Access, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or not access.sees(ticket.mailbox):
        raise _not_found("ticket")
    return ticket


@router.get(f"{PREFIX}/tickets", response_model=TicketPage, responses=_errors(400, 401, 422))
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
) -> dict[str, Any]:
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
    return {
        "tickets": [ticket_summary(t, counts.get(t.id or 0, 0)) for t in page],
        "next_cursor": encode_cursor(last.updated_at, last.id or 0) if last else None,
    }


@router.get(
    f"{PREFIX}/tickets/{{ticket_id}}", response_model=TicketOut, responses=_errors(401, 404, 422)
)
def get_ticket(access: Auth, session: Db, ticket_id: Id) -> dict[str, Any]:
    """One ticket with its messages (sanitised HTML, attachment links) and replies."""
    _visible_ticket(session, access, ticket_id)
    document = ticket_document(session, access.config, ticket_id)
    assert document is not None
    return document


@router.patch(
    f"{PREFIX}/tickets/{{ticket_id}}",
    response_model=TicketSummaryOut,
    responses=_errors(400, 401, 404, 422),
)
def patch_ticket(access: Auth, session: Db, ticket_id: Id, change: TicketPatch) -> dict[str, Any]:
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
    responses=_errors(400, 401, 404, 422),
)
def post_reply(
    access: Auth, session: Db, ticket_id: Id, reply: ReplyIn, response: Response
) -> dict[str, Any]:
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
    return {**reply_view(row), "ticket_id": ticket_id}


@router.get(
    f"{PREFIX}/replies/{{reply_id}}", response_model=ReplyOut, responses=_errors(401, 404, 422)
)
def get_reply(access: Auth, session: Db, reply_id: Id) -> dict[str, Any]:
    """A reply's delivery state: queued, sending, sent, retrying or failed."""
    row = session.get(Reply, reply_id)
    if row is None or not access.sees(row.mailbox):
        raise _not_found("reply")
    return {**reply_view(row), "ticket_id": row.ticket_id}


@router.get(
    f"{PREFIX}/attachments/{{attachment_id}}",
    response_class=Response,
    responses={
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the bytes, with the attachment's own content type",
        },
        **_errors(401, 404, 422),
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
        raise _not_found("attachment")
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


@router.get(f"{PREFIX}/rejections", response_model=RejectionList, responses=_errors(400, 401, 422))
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
    f"{PREFIX}/trace/{{message_id:path}}", response_model=TraceOut, responses=_errors(401, 404, 422)
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
        raise _not_found("message")
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
        **_errors(404),
    },
)
def metrics(context: Ctx) -> Response:
    """The Prometheus metrics, when ``metrics.listen`` is configured."""
    if context.registry is None or not context.current().metrics.listen:
        raise Problem(404, "metrics_off", "metrics are not enabled (metrics.listen)")
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)


async def _problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _invalid(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    return problem_response(
        Problem(422, "validation_failed", "the request is not valid", errors=errors)
    )


def _allowed(request: Request) -> str:
    """Every method the path has, across the routes that share it (Starlette names one).

    The API's own routes are read from ``router``: FastAPI wraps an included
    router in an object whose routes ``app.routes`` no longer lists.
    """
    methods: set[str] = set()
    for route in [*request.app.routes, *router.routes]:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        headers = {"Allow": _allowed(request)}
        problem = Problem(405, "method_not_allowed", "method not allowed", headers=headers)
    elif exc.status_code == 404:
        problem = _not_found("resource")
    elif exc.status_code == 400:
        problem = Problem(400, "bad_request", "the request cannot be read", str(exc.detail))
    else:
        problem = Problem(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)
    return problem_response(problem)


async def _internal(_request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after this answer, so uvicorn logs the traceback.
    return problem_response(Problem(500, "internal_error", "internal error"))


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
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _internal)
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


if __name__ == "__main__":  # pragma: no cover - regenerates the checked-in document
    from policy.config.model import parse_config
    from storage.engine import make_engine

    document = create_app(lambda: parse_config(""), make_engine("sqlite://")).openapi()
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
