"""The console as an ASGI app, mounted at ``/console`` of the HTTP API (``api.listen``).

It is always mounted and answers 404 while ``console:`` is not configured,
so a reload can switch it on or off. Being a mounted application, none of
its routes is in the API's OpenAPI document. Every response carries a strict
Content-Security-Policy (scripts and styles only from ``/console/static``,
nothing inline, no framing); pages are never cached.

Reads go through the same storage functions as the CLI (``storage.status``,
``storage.rejections``, ``ingest.ops.lookup``, ``storage.quarantine``,
``storage.outbox``, ``storage.events``); actions are POST forms with the
session's CSRF token, refused for the ``read-only`` role.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from ingest.console import auth, pages
from ingest.console.context import ROOT, Console, Refused, SecurityHeaders, SignIn, Who, console_of
from policy.config.model import Config


def create_console(current: Callable[[], Config], engine: Engine) -> ASGIApp:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = Console(current, engine)
    app.include_router(pages.router)
    static = Path(__file__).resolve().parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignIn)
        target = f"{ROOT}/login"
        if request.method == "GET" and exc.next_path:
            target += "?" + urlencode({"next": exc.next_path})
        return RedirectResponse(target, 303)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        console = console_of(request)
        token = request.cookies.get(auth.COOKIE)
        settings = current().console
        session = console.sessions.get(token, 1e9) if settings is not None else None
        user = auth.find_user(settings, session.user) if settings and session else None
        viewer = Who(user, session, token or "") if user and session else None
        return console.page("error.html", viewer, exc.status, message=exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        text = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "error")
        return PlainTextResponse(text, status_code=exc.status_code)

    app.add_exception_handler(SignIn, sign_in)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    return SecurityHeaders(app)
