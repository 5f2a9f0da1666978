"""The read lane: the product reads dispatched by their exact paths before FastAPI's router.

FastAPI tries a request's path against every route in turn and resolves each route's
dependencies for it; for the reads, the most frequent requests, that is a good part of their
time (issue: performance, round two). The lane answers a `GET` of a product's path itself:
the route FastAPI would have matched is put in the request's scope (the access log and the
metrics name it as before), the token is checked as the route's `require` dependency checks
it (shared.security.auth.authorize), the product's read handler answers, and a problem it
raises is rendered as the app's handlers render it. Everything else (HEAD, other methods, any
other path) goes on to the router, and FastAPI still serves the OpenAPI of every route.

It sits inside the request hygiene (rate limit, body cap, access log, headers): the checks
around a read are the same whichever way it is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import Problem, problem_response
from shared.security.auth import authorize

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Lane:
    """One path the lane serves: the route FastAPI would match, its handler, the scope it
    needs."""

    route: APIRoute
    handler: Handler
    scope: str


class ReadLane:
    """ASGI middleware: `GET` of a lane's exact path answered by the lane, anything else by
    the app."""

    def __init__(self, app: ASGIApp, lanes: dict[str, Lane]):
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = (
            self.lanes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET"
            else None
        )
        if lane is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = lane.route
        scope.setdefault("path_params", {})
        request = Request(scope, receive, send)
        try:
            await authorize(request, lane.scope)
            response = await lane.handler(request)
        except Problem as problem:
            response = problem_response(problem, request)
        await response(scope, receive, send)


def install_read_lane(
    app: FastAPI, scope: str, handlers: dict[str, Handler], router: APIRouter
) -> None:
    """Serve the `GET` routes of `handlers`' paths (routes of `router`, which the app includes
    with a dependency requiring `scope`) through the lane, innermost of the app's middleware:
    inside the rate limit, the body cap and the access log."""
    routes: dict[str, Any] = {
        route.path: route
        for route in router.routes
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()) and route.path in handlers
    }
    missing = sorted(set(handlers) - set(routes))
    if missing:
        raise ValueError(f"the read lane's paths have no GET route: {missing}")
    lanes = {path: Lane(routes[path], handler, scope) for path, handler in handlers.items()}
    if app.middleware_stack is not None:
        raise RuntimeError("the read lane is installed before the app starts")
    # innermost of the app's own middleware (add_middleware would put it outermost)
    app.user_middleware.append(Middleware(ReadLane, lanes=lanes))
