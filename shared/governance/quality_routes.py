"""A domain's quality endpoints (/<domain>/v1/quality...) and its scheduled quality runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from shared.declarations.products import Domain
from shared.errors import InvalidValue, LimitOutOfRange, NotFound, only_parameters
from shared.governance.quality import QualityRun, latest_run, read_run, run_history, run_quality
from shared.openapi import problem
from shared.schedule import every
from shared.security.auth import require
from shared.storage.db import Database

HISTORY_LIMIT = 20
HISTORY_MAX_LIMIT = 100
_WHOLE_DIGITS = 9  # run ids, limits and offsets: at most 9 digits (well inside an int4)
_MAX_WHOLE = 10**_WHOLE_DIGITS - 1

_log = logging.getLogger("datamesh.quality")


AfterRun = Callable[[QualityRun], None] | None


class NoQualityRun(NotFound):
    code = "no_quality_run"
    title = "No quality run yet"


class UnknownQualityRun(NotFound):
    code = "unknown_quality_run"
    title = "Unknown quality run"


Responses = dict[int | str, dict[str, Any]]
_UNAVAILABLE: Responses = {
    503: problem("The domain database is unreachable (`Retry-After` says when to retry)."),
    504: problem("A query ran longer than the statement timeout (`statement_timeout`)."),
}
_BAD_PARAMETER: Responses = {400: problem("A query parameter is unknown or malformed.")}

_RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "product": {"type": "string"},
        "check": {"type": "string", "description": "Unique within the product, e.g. unique:email"},
        "kind": {"type": "string"},
        "dimension": {"type": "string", "description": "ODCS data-quality dimension"},
        "severity": {"type": "string", "enum": ["critical", "major", "minor"]},
        "outcome": {"type": "string", "enum": ["pass", "fail", "warn", "error"]},
        "measured_value": {"type": ["number", "null"]},
        "threshold": {"type": "string"},
        "message": {"type": "string"},
        "sample_rows": {
            "type": "array",
            "maxItems": 5,
            "items": {"type": "object"},
            "description": "Up to 5 failing rows: key and checked columns, never PII columns.",
        },
    },
}
_TALLY = {
    "score": {"type": ["number", "null"], "description": "0-100; see docs/quality.md"},
    **{n: {"type": "integer"} for n in ("checks", "passed", "failed", "warned", "errored")},
}
_SUMMARY_PROPERTIES: dict[str, Any] = {
    "run_id": {"type": "integer"},
    "started_at": {"type": "string", "format": "date-time"},
    "finished_at": {"type": "string", "format": "date-time"},
    "trigger": {"type": "string", "enum": ["manual", "schedule", "cli"]},
    **_TALLY,
    "products": {
        "type": "object",
        "description": "Product name -> its score and counts in this run.",
        "additionalProperties": {"type": "object", "properties": _TALLY},
    },
}
_SUMMARY_SCHEMA = {"type": "object", "properties": _SUMMARY_PROPERTIES}
_RUN_SCHEMA = {
    "type": "object",
    "properties": {
        **_SUMMARY_PROPERTIES,
        "results": {"type": "array", "items": _RESULT_SCHEMA},
    },
}

_SCORE_NOTE = (
    "Score: 100 x sum(weight x credit) / sum(weight), weights critical 3, major 2, minor 1; "
    "credit pass 1, warn 0.5, fail and error 0; rounded to 1 decimal."
)


def _whole_number(request: Request, name: str, default: int, maximum: int | None) -> int:
    values = request.query_params.getlist(name)
    if not values:
        return default
    raw = values[0]
    if len(values) > 1:
        raise InvalidValue(f"Parameter '{name}' is given more than once.", parameter=name)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _WHOLE_DIGITS:
        raise InvalidValue(
            f"Parameter '{name}' has value '{raw}'; expected a whole number.",
            parameter=name,
            value=raw,
        )
    value = int(raw)
    if maximum is not None and not 1 <= value <= maximum:
        raise LimitOutOfRange(
            f"Parameter '{name}' has value {value}; expected 1 to {maximum}.",
            parameter=name,
            maximum=maximum,
        )
    return value


def quality_router(
    domain: Domain, database: Callable[[], Database], after_run: AfterRun = None
) -> APIRouter:
    """POST and GET the domain's quality runs (`after_run` is told of each run made)."""
    routes = _QualityRoutes(domain, database, after_run)
    router = APIRouter(tags=["quality"])
    base = routes.base
    router.add_api_route(
        f"{base}/runs",
        routes.create_run,
        methods=["POST"],
        status_code=201,
        dependencies=[Depends(require(f"{domain.name}:write"))],
        summary="Run the quality checks now",
        response_class=JSONResponse,
        responses={
            201: _json("The run, with every result; its URL in `Location`.", _RUN_SCHEMA),
            **_BAD_PARAMETER,
            **_UNAVAILABLE,
        },
    )
    router.add_api_route(
        base,
        routes.latest,
        methods=["GET"],
        summary="Latest quality run",
        description=f"The latest run with its score, per-product scores and results. {_SCORE_NOTE}",
        response_class=JSONResponse,
        responses={
            200: _json("The latest run.", _RUN_SCHEMA),
            **_BAD_PARAMETER,
            404: problem("No quality run has been made yet."),
            **_UNAVAILABLE,
        },
    )
    router.add_api_route(
        f"{base}/runs",
        routes.history,
        methods=["GET"],
        summary="Quality run history",
        response_class=JSONResponse,
        openapi_extra={"parameters": _HISTORY_PARAMETERS},
        responses={
            200: _json(
                "Runs without their results, newest first; `Content-Range` gives the position "
                "and the number of runs kept.",
                {"type": "array", "items": _SUMMARY_SCHEMA},
            ),
            **_BAD_PARAMETER,
            **_UNAVAILABLE,
        },
    )
    router.add_api_route(
        f"{base}/runs/{{run_id}}",
        routes.one_run,
        methods=["GET"],
        summary="One quality run",
        response_class=JSONResponse,
        openapi_extra={"parameters": [_RUN_ID_PARAMETER]},
        responses={
            200: _json("The run with every result.", _RUN_SCHEMA),
            400: problem("The run id is not a whole number, or a parameter is unknown."),
            404: problem("No run has that id."),
            **_UNAVAILABLE,
        },
    )
    return router


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_HISTORY_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Runs to return, 1 to {HISTORY_MAX_LIMIT}.",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": HISTORY_MAX_LIMIT,
            "default": HISTORY_LIMIT,
        },
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "Runs to skip, newest first.",
        "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_WHOLE, "default": 0},
    },
]
_RUN_ID_PARAMETER = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_WHOLE},
}


class _QualityRoutes:
    """The handlers of a domain's quality endpoints."""

    def __init__(self, domain: Domain, database: Callable[[], Database], after_run: AfterRun):
        self.domain, self.database, self.after_run = domain, database, after_run
        self.base = f"/{domain.name}/v1/quality"

    async def create_run(self, request: Request) -> JSONResponse:
        """Run every declared check of every product now and keep the results."""
        only_parameters(request)
        async with self.database().connection() as conn:
            run = await run_quality(conn, self.domain, trigger="manual")
        if self.after_run is not None:
            self.after_run(run)
        location = f"{self.base}/runs/{run.run_id}"
        return JSONResponse(run.document(), status_code=201, headers={"Location": location})

    async def latest(self, request: Request) -> JSONResponse:
        """The latest quality run with its score, per-product scores and results."""
        only_parameters(request)
        async with self.database().connection() as conn:
            run = await latest_run(conn)
        if run is None:
            raise NoQualityRun(
                f"No quality run of the {self.domain.name} domain yet; start one with "
                f"POST {self.base}/runs."
            )
        return JSONResponse(run.document())

    async def history(self, request: Request) -> JSONResponse:
        """Kept quality runs with their scores, newest first."""
        only_parameters(request, ("limit", "offset"))
        limit = _whole_number(request, "limit", HISTORY_LIMIT, HISTORY_MAX_LIMIT)
        offset = _whole_number(request, "offset", 0, None)
        async with self.database().connection() as conn:
            runs, total = await run_history(conn, limit=limit, offset=offset)
        span = f"{offset}-{offset + len(runs) - 1}" if runs else "*"
        return JSONResponse(runs, headers={"Content-Range": f"{span}/{total}"})

    async def one_run(self, request: Request) -> JSONResponse:
        """One kept quality run with its results."""
        only_parameters(request)
        raw = request.path_params["run_id"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > _WHOLE_DIGITS:
            raise InvalidValue(
                f"Run id '{raw}' is not a whole number.", parameter="run_id", value=raw
            )
        async with self.database().connection() as conn:
            run = await read_run(conn, int(raw))
        if run is None:
            raise UnknownQualityRun(
                f"No quality run {raw} in the {self.domain.name} domain; see GET {self.base}/runs.",
                run_id=int(raw),
            )
        return JSONResponse(run.document())


def quality_schedule(
    domain: Domain,
    database: Database,
    interval_seconds: float,
    after_run: AfterRun = None,
    leads: Callable[[], bool] | None = None,
) -> AbstractAsyncContextManager[None]:
    """While inside, run the domain's checks at start and every `interval_seconds` (0: never),
    while `leads` says this process leads the domain's background jobs
    (shared.storage.leader). A failed run is logged and the schedule goes on; leaving stops it
    cleanly."""

    async def run() -> None:
        async with database.connection() as conn:
            done = await run_quality(conn, domain, trigger="schedule")
        if after_run is not None:
            after_run(done)
        tally = done.tally
        _log.info(
            "quality run %s of the %s domain: score %s, %s failed, %s errors",
            done.run_id,
            domain.name,
            tally.score,
            tally.failed,
            tally.errored,
        )

    name = f"scheduled quality run of the {domain.name} domain"
    return every(name, interval_seconds, run, _log, only_if=leads)
