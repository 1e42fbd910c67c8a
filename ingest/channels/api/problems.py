"""The API's errors: RFC 9457 problem documents with a stable ``code``.

A :class:`Problem` is the client's to act on: the same request gets the same
answer, so it is a :class:`~policy.errors.PermFail`. Every error the
framework raises (an unknown path, a wrong method, an unreadable or invalid
body, a bug) is answered in the same form by the handlers installed here, so
a client reads one shape for every failure; ``code`` values are listed in the
OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy.errors import PermFail

PROBLEM_TYPE = "application/problem+json"


class Problem(PermFail):
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


def not_found(what: str) -> Problem:
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


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
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


def install_handlers(app: FastAPI, router: APIRouter) -> None:
    """Answer every error ``app`` meets as a problem; ``router`` holds the API's routes.

    The API's own routes are read from ``router`` when a 405 names the
    allowed methods: FastAPI wraps an included router in an object whose
    routes ``app.routes`` no longer lists.
    """

    async def problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem_response(
            Problem(422, "validation_failed", "the request is not valid", errors=errors)
        )

    def allowed(request: Request) -> str:
        """Every method the path has, across the routes that share it (Starlette names one)."""
        methods: set[str] = set()
        for route in [*request.app.routes, *router.routes]:
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
                methods |= route.methods or set()
        return ", ".join(sorted(methods))

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            headers = {"Allow": allowed(request)}
            found = Problem(405, "method_not_allowed", "method not allowed", headers=headers)
        elif exc.status_code == 404:
            found = not_found("resource")
        elif exc.status_code == 400:
            found = Problem(400, "bad_request", "the request cannot be read", str(exc.detail))
        else:
            found = Problem(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)
        return problem_response(found)

    async def internal(_request: Request, _exc: Exception) -> Response:
        # Starlette re-raises after this answer, so uvicorn logs the traceback.
        return problem_response(Problem(500, "internal_error", "internal error"))

    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, internal)
