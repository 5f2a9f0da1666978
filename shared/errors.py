"""One error hierarchy, rendered as RFC 9457 problem+json by one handler."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("datamesh")


class Problem(Exception):
    """An error a caller can act on: a stable code, an HTTP status and a message."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str) -> dict[str, Any]:
        """The problem+json document for this error."""
        return {
            "type": f"https://datamesh.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }


class UnknownParameter(Problem):
    code = "unknown_parameter"
    title = "Unknown query parameter"


def only_parameters(request: Request, allowed: tuple[str, ...] | list[str] = ()) -> None:
    """400 naming the first query parameter of the request that is not one of `allowed`."""
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise UnknownParameter(
                f"Unknown query parameter '{name}'; accepted here: {known}.", parameter=name
            )


class UnknownColumn(Problem):
    code = "unknown_column"
    title = "Unknown column"


class UnknownOperator(Problem):
    code = "unknown_operator"
    title = "Unknown operator"


class InvalidValue(Problem):
    code = "invalid_value"
    title = "Invalid value"


class LimitOutOfRange(Problem):
    code = "limit_out_of_range"
    title = "Limit out of range"


class InvalidCursor(Problem):
    code = "invalid_cursor"
    title = "Invalid cursor"


class NotAcceptable(Problem):
    status = 406
    code = "not_acceptable"
    title = "Not acceptable"


class NotFound(Problem):
    status = 404
    code = "not_found"
    title = "Not found"


class UnknownProduct(NotFound):
    code = "unknown_product"
    title = "Unknown data product"


class ServiceUnavailable(Problem):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class GatewayTimeout(Problem):
    status = 504
    code = "gateway_timeout"
    title = "Gateway timeout"


class StreamAborted(Exception):
    """A streamed response that failed after it had started (logged where it failed): the
    server closes the connection without the end of the body."""


# where the code of the problem a request was answered with is noted, in its ASGI scope
PROBLEM_CODE = "datamesh.problem_code"


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    """Render a problem as a problem+json response (its code noted in the request's scope for
    the metrics: shared.serving.hygiene)."""
    request.scope[PROBLEM_CODE] = problem.code
    return JSONResponse(
        problem.body(request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method the app serves at the request's path. Starlette's 405 names only those of
    the first route that matches the path, though a path may have a route per method."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of the app, expected or not, a problem+json response."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = {
            404: f"Nothing is published at '{request.url.path}'.",
            405: f"Method {request.method} is not allowed on '{request.url.path}'.",
        }.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        problem = Problem(detail, headers=headers)
        problem.status = exc.status_code
        problem.code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        problem.title = problem.code.replace("_", " ").capitalize()
        return problem_response(problem, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid input')}"
        problem = InvalidValue(detail, errors=[{"loc": e["loc"], "msg": e["msg"]} for e in errors])
        problem.status = 422 if request.method != "GET" else 400
        return problem_response(problem, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StreamAborted):  # logged already; its response had started
            _log.exception("unexpected error on %s %s", request.method, request.url.path)
        problem = Problem("The service failed to answer; the error was logged.")
        problem.status, problem.code, problem.title = 500, "internal_error", "Internal error"
        return problem_response(problem, request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)


class UnsupportedMediaType(Problem):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"
