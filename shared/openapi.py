"""What every service's OpenAPI document says that no single route declares: the problem+json
answers of the bearer check (401, 403), the rate limit (429), the body cap (413) and request
validation (400 on reads, 422 on writes), so that each operation documents every response it
can give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from shared.errors import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem; `code` is stable, other members depend on it.",
    "properties": {k: {"type": "string"} for k in ("type", "title", "code", "detail", "instance")}
    | {"status": {"type": "integer"}},
    "required": ["type", "title", "status", "code", "detail", "instance"],
}

_STRING = {"schema": {"type": "string"}}
_SECONDS = {"schema": {"type": "string", "pattern": "^[0-9]+$"}}
_RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "Seconds until a request is allowed again.", **_SECONDS},
    "RateLimit-Limit": {"description": "Requests allowed per minute.", **_SECONDS},
    "RateLimit-Remaining": {"description": "Requests left in the window.", **_SECONDS},
    "RateLimit-Reset": {"description": "Seconds until the window frees a slot.", **_SECONDS},
}
BEARER_CHALLENGE = {"WWW-Authenticate": {"description": "The bearer challenge.", **_STRING}}


def problem(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response answered as application/problem+json."""
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = problem(
    "No bearer token, or one that is malformed, expired or not signed by a trusted key.",
    headers=BEARER_CHALLENGE,
)
_FORBIDDEN = problem("The token lacks the scope this operation needs.", headers=BEARER_CHALLENGE)
_RATE_LIMITED = problem(
    "The caller (the token's subject, else the client address) made too many requests in the "
    "last minute.",
    headers=_RATE_LIMIT_HEADERS,
)
_TOO_LARGE = problem("The request body is larger than the service accepts.")
_VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"


def _amend_validation(method: str, responses: dict[str, Any]) -> None:
    """FastAPI documents request validation as a 422 with its own JSON shape; the problem
    handler answers it as problem+json, with 400 on reads (GET) and 422 otherwise."""
    generated = responses.get("422")
    if generated is None or _VALIDATION_ERROR not in str(generated):
        return
    del responses["422"]
    status = "400" if method == "get" else "422"
    responses.setdefault(status, problem("A parameter or the body is malformed."))


def _amend_operation(method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    _amend_validation(method, responses)
    if operation.get("security"):
        responses.setdefault("401", _UNAUTHORIZED)
        responses.setdefault("403", _FORBIDDEN)
    if "requestBody" in operation:
        responses.setdefault("413", _TOO_LARGE)
    responses.setdefault("429", _RATE_LIMITED)


def _amend(document: dict[str, Any]) -> None:
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                _amend_operation(method, operation)
    schemas = document.get("components", {}).get("schemas", {})
    if _VALIDATION_ERROR not in str(document.get("paths")):
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)


def document_service_responses(app: FastAPI) -> None:
    """Make the app's OpenAPI document list, on each operation, the problem responses the
    service-wide layers give (auth, rate limit, body cap, validation)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    amended: list[dict[str, Any]] = []  # the document amended last

    def openapi() -> dict[str, Any]:
        # FastAPI caches its document, and makes a new one when routes are added
        document = generate()
        if not amended or amended[0] is not document:
            _amend(document)
            amended[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
