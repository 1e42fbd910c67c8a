"""What every console page works with: who is asking, the form they sent, the rules.

The request-level pieces the pages (:mod:`ingest.console.pages`) depend on and
the app (:mod:`ingest.console.webapp`) installs: the signed-in user and role,
CSRF-checked forms, safe redirects, the security headers every response
carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.console import auth
from ingest.console.render import environment
from policy.config.model import Config, ConsoleConfig, ConsoleUser
from policy.errors import PermFail

ROOT = "/console"
MAX_FORM = 256 * 1024  # a pasted header block fits; nothing else comes close
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Message-IDs and addresses in our URLs never leave in a Referer; same-origin
    # requests keep their Origin header, which form() checks.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _inner(scope: Scope) -> str:
    """The path below ``/console`` (Starlette versions differ in what a mount passes on)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path.removeprefix(root) if root and path.startswith(root) else path


class SecurityHeaders:
    """The same protective headers on every console response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = _inner(scope).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                cache = b"max-age=3600" if static else b"no-store"
                message["headers"] = [*headers, *_HEADERS, (b"cache-control", cache)]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class Who:
    """The signed-in operator of this request."""

    user: ConsoleUser
    session: auth.ConsoleSession
    token: str

    @property
    def may_act(self) -> bool:
        return self.user.role != "read-only"


class SignIn(PermFail):
    """No valid session: answered with a redirect to the login page, then back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(PermFail):
    """An answer page with a status: forbidden actions, bad forms, unknown items."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Console:
    """What the console's requests share: config, store, sessions, login limits, templates."""

    def __init__(self, current: Callable[[], Config], engine: Engine) -> None:
        self.current = current
        self.engine = engine
        self.sessions = auth.Sessions()
        self.limiter = auth.LoginLimiter()
        self.templates = environment()

    def settings(self) -> ConsoleConfig:
        console = self.current().console
        if console is None:
            raise StarletteHTTPException(404)
        return console

    def page(
        self,
        name: str,
        who: Who | None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(root=ROOT, who=who, **values)
        return HTMLResponse(html, status_code=status, headers=headers)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _configured(console: Annotated[Console, Depends(console_of)]) -> ConsoleConfig:
    return console.settings()


def who(
    request: Request,
    console: Annotated[Console, Depends(console_of)],
    settings: Annotated[ConsoleConfig, Depends(_configured)],
) -> Who:
    token = request.cookies.get(auth.COOKIE)
    session = console.sessions.get(token, settings.session_hours * 3600)
    user = auth.find_user(settings, session.user) if session is not None else None
    if session is None or user is None or token is None:
        console.sessions.end(token)
        path = _inner(request.scope)
        raise SignIn(ROOT + path + (f"?{request.url.query}" if request.url.query else ""))
    return Who(user, session, token)


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form, bounded; also refuses a cross-origin post outright."""
    origin = request.headers.get("origin")
    if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host"):
        raise Refused(403, "This form was sent from another site.")
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_FORM:
        raise Refused(413, "The form is too large.")
    body = await request.body()
    if len(body) > MAX_FORM:
        raise Refused(413, "The form is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "The form cannot be read.") from None
    return dict(pairs)


def checked(who: Who, fields: dict[str, str], *, action: bool = True) -> None:
    """The session's CSRF token must come with every POST; actions need the operator role."""
    if not auth.same_token(who.session.csrf, fields.get("csrf")):
        raise Refused(403, "The form has expired or did not come from this console; reload.")
    if action and not who.may_act:
        raise Refused(
            403,
            f"{who.user.name} has the read-only role: it can look but not release, delete, "
            "retry or run send tests.",
        )


Signed = Annotated[Who, Depends(who)]
Form = Annotated[dict[str, str], Depends(form)]
Ui = Annotated[Console, Depends(console_of)]


def safe_next(value: str | None) -> str:
    """Only a path inside the console: never another site (``//x``, ``/\\x``, schemes)."""
    unsafe = any(c in (value or "") for c in "\\\r\n")
    if value and value.startswith(f"{ROOT}/") and not unsafe:
        return value
    return f"{ROOT}/"


def secure(request: Request) -> bool:
    """Behind TLS (ours or a proxy's), the session cookie is sent only over TLS."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
