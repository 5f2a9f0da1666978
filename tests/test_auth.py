"""Bearer tokens: every route of every service needs a token with its domain's scope (only
health, OpenAPI and docs are open); a bad token is a 401 that says why; RS256/ES256 tokens from
an identity provider's JWKS; production refuses to start without a configured key; the three
personas; the OpenAPI security scheme behind the docs' Authorize button.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services import DOMAINS, PERSONAS, domain
from services.federation.app import create_app
from services.federation.metrics import METRICS
from services.federation.settings import FederationSettings
from shared.security.auth import AuthSettings, ensure_secret, known_scopes
from shared.serving.app import create_domain_app
from shared.serving.docs import ASSETS, assets_path
from shared.settings import ServiceSettings
from shared.storage.embedded import free_port
from tests.conftest import TEST_SECRET, sample_databases, token
from tests.postgres import PostgresServer
from tests.servers import served

PROBLEM_JSON = "application/problem+json"
SERVICES = (*DOMAINS, "mesh")
MISSING_TOKEN = "This request needs a bearer token."
PRODUCTION_MESSAGE = (
    "DATAMESH_ENV=production needs an explicitly configured token key: set DATAMESH_JWT_SECRET "
    "or DATAMESH_JWT_SECRET_FILE (HS256), or DATAMESH_JWKS_URL or DATAMESH_JWKS_FILE (RS256/ES256)"
)
NO_KEY_MESSAGE = (
    "No token key is configured: set DATAMESH_JWT_SECRET_FILE (or DATAMESH_JWT_SECRET, "
    "DATAMESH_JWKS_URL, DATAMESH_JWKS_FILE), or start the mesh with `datamesh up`, which creates "
    "a secret in the data directory."
)


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def scoped(*scopes: str) -> dict[str, str]:
    return bearer(token(*scopes))


def assert_unauthorized(
    response: httpx.Response, detail: str, challenge: str | None = None
) -> None:
    """A 401 problem+json with this detail and its RFC 6750 challenge (the detail again)."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"], body["title"]) == (401, "unauthorized", "Unauthorized")
    assert body["detail"] == detail
    assert body["instance"] == response.request.url.path
    if challenge is None:
        challenge = (
            'Bearer realm="datamesh"'
            if detail == MISSING_TOKEN
            else f'Bearer realm="datamesh", error="invalid_token", error_description="{detail}"'
        )
    assert response.headers["www-authenticate"] == challenge


def assert_forbidden(response: httpx.Response, scope: str) -> None:
    """A 403 problem+json naming the missing scope, in `scope` and in `detail`."""
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"], body["scope"]) == (403, "insufficient_scope", scope)
    sentence = f"This request needs the scope '{scope}', which the token does not carry"
    # the sentence, alone or followed by why (a metric of a domain's rows)
    assert body["detail"] == f"{sentence}." or body["detail"].startswith(f"{sentence}: ")
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="datamesh", error="insufficient_scope", scope="{scope}"'
    )


# --- the routes: read from the apps, so a new route cannot escape the matrix -------------------


def open_paths(service: str) -> set[str]:
    """The routes anyone may call: health, the Prometheus metrics (no data: docs/observability.md),
    the OpenAPI document and the docs page with its files (Swagger UI's, static)."""
    return {
        "/metrics",
        f"/{service}/healthz",
        f"/{service}/readyz",
        f"/{service}/docs",
        f"/{service}/openapi.json",
        *(f"{assets_path(service)}/{name}" for name in ASSETS),
    }


def declared_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route the app declares, those of included routers too."""
    found = []
    for route in iter_route_contexts(app.routes):
        methods = set(route.methods or ()) - {"HEAD"}
        assert methods, f"{route.path} is not an HTTP route: add it to the matrix by hand"
        found += [(method, str(route.path)) for method in sorted(methods)]
    return found


def _apps_to_enumerate() -> dict[str, FastAPI]:
    """The services as their factories build them (no database is touched before startup)."""
    apps = {name: create_domain_app(domain(name)) for name in DOMAINS}
    domains = {name: f"http://{name}.invalid" for name in DOMAINS}
    apps["mesh"] = create_app(FederationSettings.model_validate({"domains": domains}))
    return apps


ROUTES = [
    (name, method, path)
    for name, app in _apps_to_enumerate().items()
    for method, path in declared_routes(app)
]


def needed_scopes(service: str, method: str, path: str = "") -> tuple[str, ...]:
    """What the right token carries: the service's read scope (a POST read's too); writes need
    `<domain>:write`,
    the owner's corrections `<domain>:admin`; a metric answering a domain's rows needs that
    domain's read scope too."""
    if service == "mesh":
        metric = {m.name: m for m in METRICS}.get(path.rsplit("/", 1)[-1])
        return metric.scopes if metric is not None else ("mesh:read",)
    if "/corrections/" in path:
        return (f"{service}:read", f"{service}:admin")
    if method == "GET" or f"/{service}/v1/query/" in path:  # a POST read is a read
        return (f"{service}:read",)
    return (f"{service}:read", f"{service}:write")


def foreign_scopes(service: str) -> tuple[str, ...]:
    """Every scope of the other services, none of this one's (and not admin)."""
    every = known_scopes(DOMAINS)
    if service == "mesh":
        return tuple(s for s in every if s.split(":")[0] in DOMAINS)
    return tuple(s for s in every if s.split(":")[0] not in (service, "admin"))


# --- the services under test -----------------------------------------------------------------


@dataclass
class Service:
    name: str
    app: FastAPI
    client: httpx.AsyncClient  # sends no token unless a request gives one
    run_id: int = 0  # a quality run made with an admin token (domains)

    def url(self, path: str) -> str:
        """The path with its parameters filled with values that exist in the sample data."""
        values = {
            "product": {"sales": "orders", "marketing": "leads"}.get(self.name, ""),
            "run_id": str(self.run_id),
            "name": "no-such-product",  # the catch-all answers unknown products
            **{key: "1" for key in SAMPLE_KEYS},
            # the natural keys of the daily upserts (PUT)
            "metric_date": "2024-10-01",
            "visit_date": "2024-10-01",
            "source": "Organic",
        }

        def value(match: re.Match[str]) -> str:
            assert match[1] in values, f"no sample value for {{{match[1]}}} in {path}: add one"
            return values[match[1]]

        return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


SAMPLE_KEYS = (
    "customer_id",
    "product_id",
    "order_id",
    "item_id",
    "campaign_id",
    "lead_id",
    "metric_id",
    "traffic_id",
)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started, and a client of it that sends no token by default."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(scope="module")
def own_databases(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Databases of their own: the matrix POSTs quality runs, which other tests must not see."""
    return sample_databases(postgres_servers, "auth")


@pytest.fixture(scope="module")
async def services(
    own_databases: dict[str, str], domain_urls: dict[str, str], settings: ServiceSettings
) -> AsyncIterator[dict[str, Service]]:
    apps = {
        name: create_domain_app(domain(name), database_url=own_databases[name], settings=settings)
        for name in DOMAINS
    }
    apps["mesh"] = create_app(FederationSettings.model_validate({"domains": domain_urls}))
    async with AsyncExitStack() as stack:
        found = {}
        for name, app in apps.items():
            found[name] = Service(name, app, await stack.enter_async_context(serving(app)))
        for name in DOMAINS:
            run = await found[name].client.post(f"/{name}/v1/quality/runs", headers=scoped("admin"))
            assert run.status_code == 201, run.text
            found[name].run_id = run.json()["run_id"]
        yield found


# --- the matrix ------------------------------------------------------------------------------


def test_the_matrix_covers_the_services_as_they_run(services: dict[str, Service]) -> None:
    for name, service in services.items():
        assert sorted(declared_routes(service.app)) == sorted(
            (method, path) for n, method, path in ROUTES if n == name
        )
    assert len(ROUTES) > 60  # every product's routes, not a handful


@pytest.mark.parametrize("name", SERVICES)
async def test_open_routes_are_exactly_health_openapi_and_docs(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    answered = {}
    for method, path in declared_routes(service.app):
        response = await service.client.request(method, service.url(path))
        if response.status_code != 401:
            answered[path] = response.status_code
    assert answered == {path: 200 for path in open_paths(name)}


@pytest.mark.parametrize(
    ("name", "method", "path"), ROUTES, ids=[f"{n} {m} {p}" for n, m, p in ROUTES]
)
async def test_every_route_needs_a_token_with_its_scope(
    services: dict[str, Service], name: str, method: str, path: str
) -> None:
    service = services[name]
    url = service.url(path)
    if path in open_paths(name):
        assert (await service.client.request(method, url)).status_code == 200
        return
    needed = needed_scopes(name, method, path)

    assert_unauthorized(await service.client.request(method, url), MISSING_TOKEN)
    other = await service.client.request(method, url, headers=scoped(*foreign_scopes(name)))
    assert_forbidden(other, needed[0])
    if len(needed) > 1:  # reading is not writing; a metric of a domain's rows reads it
        assert_forbidden(
            await service.client.request(method, url, headers=scoped(needed[0])), needed[1]
        )

    # a DELETE with the right token is made conditional on an ETag no row has: refused (412)
    # after the token check, and the sample row stays
    stale = {"If-Match": '"not-the-etag"'} if method == "DELETE" else {}
    right = await service.client.request(method, url, headers={**scoped(*needed), **stale})
    if "/v1/{name" in path:  # the catch-all only ever answers an unknown product
        assert right.status_code == 404, right.text
        assert right.json()["code"] == "unknown_product"
    elif method != "GET" and not path.endswith("/quality/runs"):
        # a write sent without a body passes the token check and is refused for its body
        # (or its missing content type, or a missing natural-key parameter): tests/test_writes.py
        assert right.status_code in (400, 412, 415, 422), right.text
    else:
        assert right.status_code == (201 if method == "POST" else 200), right.text


async def test_a_verified_token_is_not_remembered_for_the_next_request(
    services: dict[str, Service],
) -> None:
    client = services["sales"].client
    assert (await client.get("/sales/v1/orders", headers=scoped("admin"))).status_code == 200
    assert_unauthorized(await client.get("/sales/v1/orders"), MISSING_TOKEN)
    assert_forbidden(
        await client.get("/sales/v1/orders", headers=scoped("mesh:read")), "sales:read"
    )


async def test_a_token_in_another_scheme_is_no_token(services: dict[str, Service]) -> None:
    client = services["sales"].client
    for authorization in (f"Basic {token('admin')}", "Bearer", "Bearer ", token("admin")):
        response = await client.get("/sales/v1/orders", headers={"Authorization": authorization})
        assert_unauthorized(response, MISSING_TOKEN)


# --- bad tokens ------------------------------------------------------------------------------

DROP = object()  # a claim left out
OTHER_SECRET = secrets.token_urlsafe(48)  # not the services' secret


def claims(**changes: Any) -> dict[str, Any]:
    """A token's claims for the tests' services (sales:read, valid for ten minutes)."""
    now = int(time.time())
    base = {
        "sub": "tests",
        "scope": "sales:read",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": "datamesh",
        "aud": "datamesh",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def signed(payload: dict[str, Any], key: Any = TEST_SECRET, **options: Any) -> str:
    return jwt.encode(payload, key, **{"algorithm": "HS256", **options})


def segment(part: Any) -> str:
    raw = part if isinstance(part, bytes) else json.dumps(part).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token crafted by hand with an empty signature."""
    return f"{segment(header)}.{segment(payload)}."


def hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    """HS256 with any bytes as the secret (PyJWT refuses to use a public key so)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{segment(signature)}"


def tampered() -> str:
    """A valid marketing token whose claims were edited to say admin, signature kept."""
    header, _, signature = signed(claims(scope="marketing:read")).split(".")
    return f"{header}.{segment(claims(scope='admin'))}.{signature}"


def ago(seconds: int) -> int:
    return int(time.time()) - seconds


HOSTILE_ALG = 'x\r\nX-Injected: 1 "中"'
BAD_TOKENS = {
    "expired beyond the leeway": (
        lambda: signed(claims(iat=ago(120), nbf=ago(120), exp=ago(40))),
        "The token has expired.",
    ),
    "wrong signature": (
        lambda: signed(claims(), OTHER_SECRET),
        "The token's signature does not verify with the key.",
    ),
    "claims edited after signing": (
        tampered,
        "The token's signature does not verify with the key.",
    ),
    "wrong audience": (
        lambda: signed(claims(aud="another-api")),
        "The token is not for this service: its audience is not 'datamesh'.",
    ),
    "wrong issuer": (
        lambda: signed(claims(iss="https://idp.example")),
        "The token is not from the expected issuer 'datamesh'.",
    ),
    "alg none": (
        lambda: unsigned({"alg": "none", "typ": "JWT"}, claims(scope="admin")),
        "The token is not valid: the algorithm 'none' is not accepted.",
    ),
    "alg None": (
        lambda: unsigned({"alg": "None"}, claims(scope="admin")),
        "The token is not valid: the algorithm 'None' is not accepted.",
    ),
    "HS512": (
        lambda: signed(claims(), algorithm="HS512"),
        "The token is not valid: the algorithm 'HS512' is not accepted.",
    ),
    "garbage": (lambda: "garbage", "The token is not valid: Not enough segments."),
    "missing exp": (lambda: signed(claims(exp=DROP)), "The token has no 'exp' claim."),
    "missing sub": (lambda: signed(claims(sub=DROP)), "The token has no 'sub' claim."),
    "missing aud": (lambda: signed(claims(aud=DROP)), "The token has no 'aud' claim."),
    "not valid yet": (
        lambda: signed(claims(nbf=ago(-120))),
        "The token is not valid: The token is not yet valid (nbf).",
    ),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_bad_token_is_a_401_saying_why(services: dict[str, Service], case: str) -> None:
    make, detail = BAD_TOKENS[case]
    response = await services["sales"].client.get("/sales/v1/orders", headers=bearer(make()))
    assert_unauthorized(response, detail)


async def test_hostile_header_values_of_a_token_cannot_break_the_challenge(
    services: dict[str, Service],
) -> None:
    # the algorithm is read before the signature: anything can be in it, even CR LF or non-ASCII
    hostile = unsigned({"alg": HOSTILE_ALG}, claims())
    response = await services["sales"].client.get("/sales/v1/orders", headers=bearer(hostile))
    assert_unauthorized(
        response,
        f"The token is not valid: the algorithm '{HOSTILE_ALG}' is not accepted.",
        challenge='Bearer realm="datamesh", error="invalid_token", error_description='
        "\"The token is not valid: the algorithm 'x''X-Injected: 1 '''' is not accepted.\"",
    )
    assert "x-injected" not in response.headers
    missing = await services["sales"].client.get(
        "/sales/v1/orders", headers=bearer(signed(claims(exp=DROP), headers={"kid": "k\r\n"}))
    )
    assert missing.headers["www-authenticate"] == (
        'Bearer realm="datamesh", error="invalid_token", '
        "error_description=\"The token has no 'exp' claim.\""
    )


async def test_clock_skew_within_the_leeway_is_allowed(services: dict[str, Service]) -> None:
    assert AuthSettings().jwt_leeway_seconds == 30
    client = services["sales"].client
    expired_10s_ago = signed(claims(iat=ago(100), nbf=ago(100), exp=ago(10)))
    assert (
        await client.get("/sales/v1/orders", headers=bearer(expired_10s_ago))
    ).status_code == 200
    valid_in_10s = signed(claims(iat=ago(-10), nbf=ago(-10)))
    assert (await client.get("/sales/v1/orders", headers=bearer(valid_in_10s))).status_code == 200


async def test_scopes_as_a_list_claim_are_accepted(services: dict[str, Service]) -> None:
    client = services["sales"].client

    def entra(scp: Any) -> dict[str, str]:
        return bearer(signed(claims(scope=DROP, scp=scp)))

    assert (await client.get("/sales/v1/orders", headers=entra(["sales:read"]))).status_code == 200
    assert (
        await client.get("/sales/v1/orders", headers=entra("mesh:read sales:read"))
    ).status_code == 200
    assert_forbidden(
        await client.get("/sales/v1/orders", headers=entra(["marketing:read", "mesh:read"])),
        "sales:read",
    )
    write = await client.post(
        "/sales/v1/quality/runs", headers=entra(["sales:read", "sales:write"])
    )
    assert write.status_code == 201, write.text


# --- personas --------------------------------------------------------------------------------

# a read of each service: a domain's first product, a metric of aggregates (mesh:read alone)
READ = {
    **{name: f"/{name}/v1/{domain(name).products[0].name}?limit=1" for name in DOMAINS},
    "mesh": "/mesh/v1/channel-effectiveness?limit=1",
}
READS = {
    "admin": set(SERVICES),
    **{f"{name}_analyst": {name, "mesh"} for name in DOMAINS},
    "analyst": set(SERVICES),
}


def test_the_personas_are_the_documented_ones() -> None:
    assert PERSONAS == {
        "admin": ("admin",),
        "sales_analyst": ("sales:read", "mesh:read"),
        "marketing_analyst": ("marketing:read", "mesh:read"),
        "analyst": ("sales:read", "marketing:read", "mesh:read"),
    }


@pytest.mark.parametrize("persona", READS)
async def test_what_each_persona_reads_and_writes(
    services: dict[str, Service], persona: str
) -> None:
    headers = scoped(*PERSONAS[persona])
    for name in SERVICES:
        response = await services[name].client.get(READ[name], headers=headers)
        if name in READS[persona]:
            assert response.status_code == 200, (name, response.text)
            assert len(response.json()) == 1
        else:
            assert_forbidden(response, f"{name}:read")
    for name in DOMAINS:
        run = await services[name].client.post(f"/{name}/v1/quality/runs", headers=headers)
        if persona == "admin":
            assert run.status_code == 201, run.text
        else:
            assert_forbidden(run, f"{name}:write" if name in READS[persona] else f"{name}:read")


# --- the OpenAPI security scheme (the docs' Authorize button) -----------------------------------


@pytest.mark.parametrize("name", SERVICES)
async def test_openapi_declares_bearer_security_on_every_protected_operation(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    response = await service.client.get(f"/{name}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A DataMesh token: `datamesh token --persona admin`.",
        }
    }
    documented = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in open_paths(name):
                assert "security" not in operation, (method, path)
            else:
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                documented.add((method.upper(), path))
    visible = {
        (method, str(route.path))
        for route in iter_route_contexts(service.app.routes)
        if route.include_in_schema and route.path not in open_paths(name)
        for method in route.methods or ()
    }
    assert documented == visible

    docs = await service.client.get(f"/{name}/docs")
    assert docs.status_code == 200
    assert f"url: '/{name}/openapi.json'" in docs.text
    assert '"persistAuthorization": true' in docs.text


# --- RS256 / ES256 from an identity provider's JWKS --------------------------------------------

ISSUER = "https://idp.example/realms/datamesh"
AUDIENCE = "datamesh-api"


@dataclass(frozen=True)
class Keys:
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    stranger: rsa.RSAPrivateKey  # not in the JWKS

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def idp_claims(**changes: Any) -> dict[str, Any]:
    return claims(**{"iss": ISSUER, "aud": AUDIENCE, **changes})


@pytest.fixture(scope="module")
async def idp_sales(
    keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
    database_urls: dict[str, str],
    settings: ServiceSettings,
) -> AsyncIterator[httpx.AsyncClient]:
    """A sales service that trusts only the keys of a JWKS file (no HS256 secret at all)."""
    folder = tmp_path_factory.mktemp("idp")
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps(keys.jwks()))
    auth = AuthSettings(
        jwks_file=jwks_file,
        jwt_secret=None,
        data_dir=folder,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    app = create_domain_app(
        domain("sales"), database_url=database_urls["sales"], settings=settings, auth=auth
    )
    async with serving(app) as client:
        yield client


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


IDP_TOKENS: dict[str, tuple[Any, int, str | None]] = {
    "RS256 with its kid": (
        lambda k: signed(idp_claims(), k.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}),
        200,
        None,
    ),
    "ES256 with its kid": (
        lambda k: signed(idp_claims(), k.ec_key, algorithm="ES256", headers={"kid": "ec-1"}),
        200,
        None,
    ),
    "RS256 without kid": (lambda k: signed(idp_claims(), k.rsa_key, algorithm="RS256"), 200, None),
    "ES256 without kid": (lambda k: signed(idp_claims(), k.ec_key, algorithm="ES256"), 200, None),
    "Entra ID's scp list": (
        lambda k: signed(
            idp_claims(scope=DROP, scp=["sales:read"]),
            k.rsa_key,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
        200,
        None,
    ),
    "unknown kid": (
        lambda k: signed(
            idp_claims(), k.rsa_key, algorithm="RS256", headers={"kid": "rotated-away"}
        ),
        401,
        "The token is not valid: no RS256 key with kid 'rotated-away' in the JWKS.",
    ),
    "a stranger's key under a known kid": (
        lambda k: signed(idp_claims(), k.stranger, algorithm="RS256", headers={"kid": "rsa-1"}),
        401,
        "The token's signature does not verify with the key.",
    ),
    "ES256 naming the RSA key": (
        lambda k: signed(idp_claims(), k.ec_key, algorithm="ES256", headers={"kid": "rsa-1"}),
        401,
        "The token is not valid: no ES256 key with kid 'rsa-1' in the JWKS.",
    ),
    "HS256 with the local secret": (
        lambda k: signed(idp_claims()),
        401,
        "The token is not valid: the algorithm 'HS256' is not accepted.",
    ),
    "HS256 keyed with the public key": (
        lambda k: hs256_by_hand(idp_claims(), public_pem(k.rsa_key)),
        401,
        "The token is not valid: the algorithm 'HS256' is not accepted.",
    ),
    "the local issuer and audience": (
        lambda k: signed(claims(), k.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}),
        401,
        "The token is not from the expected issuer 'https://idp.example/realms/datamesh'.",
    ),
    "another audience": (
        lambda k: signed(
            idp_claims(aud="account"), k.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
        ),
        401,
        "The token is not for this service: its audience is not 'datamesh-api'.",
    ),
}


@pytest.mark.parametrize("case", IDP_TOKENS)
async def test_tokens_of_an_identity_provider_by_jwks_file(
    idp_sales: httpx.AsyncClient, keys: Keys, case: str
) -> None:
    make, status, detail = IDP_TOKENS[case]
    response = await idp_sales.get("/sales/v1/orders?limit=1", headers=bearer(make(keys)))
    if detail is None:
        assert response.status_code == status, response.text
    else:
        assert_unauthorized(response, detail)


@pytest.fixture(scope="module")
def jwks_url(keys: Keys) -> Iterator[str]:
    """The JWKS served over HTTP, as an identity provider publishes it."""

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(keys.jwks())

    with served(Starlette(routes=[Route("/certs", jwks)])) as base:
        yield f"{base}/certs"


async def test_tokens_of_an_identity_provider_by_jwks_url(
    keys: Keys, jwks_url: str, database_urls: dict[str, str], tmp_path: Path
) -> None:
    auth = AuthSettings(
        jwks_url=jwks_url,
        jwt_secret=None,
        data_dir=tmp_path,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"], auth=auth)
    async with serving(app) as client:
        good = signed(idp_claims(), keys.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        assert (
            await client.get("/sales/v1/orders?limit=1", headers=bearer(good))
        ).status_code == 200
        good = signed(idp_claims(), keys.ec_key, algorithm="ES256", headers={"kid": "ec-1"})
        assert (
            await client.get("/sales/v1/orders?limit=1", headers=bearer(good))
        ).status_code == 200
        bad = signed(idp_claims(), keys.ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
        assert_unauthorized(
            await client.get("/sales/v1/orders", headers=bearer(bad)),
            "The token is not valid: the key 'rsa-1' is for RS256, not ES256.",
        )


async def test_an_unreachable_jwks_url_is_a_503_not_a_401(
    keys: Keys, database_urls: dict[str, str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/certs"
    auth = AuthSettings(
        jwks_url=url, jwt_secret=None, data_dir=tmp_path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"], auth=auth)
    async with serving(app) as client:
        good = signed(idp_claims(), keys.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        response = await client.get("/sales/v1/orders", headers=bearer(good))
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "service_unavailable"
    assert response.json()["detail"] == (
        "The identity provider's keys (DATAMESH_JWKS_URL) cannot be fetched; try again."
    )


# --- no key, no service ----------------------------------------------------------------------


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No token key anywhere: no env, no .env file, an empty data directory; its path."""
    for name in ("JWT_SECRET", "JWT_SECRET_FILE", "JWKS_URL", "JWKS_FILE", "ENV"):
        monkeypatch.delenv(f"DATAMESH_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAMESH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_production_without_a_key_is_refused_saying_what_to_set(
    bare_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAMESH_ENV", "production")
    ensure_secret(bare_environment)  # a data directory's secret is not a configured one
    with pytest.raises(ValidationError, match=re.escape(PRODUCTION_MESSAGE)):
        AuthSettings()

    configured = secrets.token_urlsafe(48)
    secret_file = bare_environment / "configured-secret"
    secret_file.write_text(f"{configured}\n")
    monkeypatch.setenv("DATAMESH_JWT_SECRET_FILE", str(secret_file))
    assert AuthSettings().secret() == configured
    monkeypatch.delenv("DATAMESH_JWT_SECRET_FILE")
    monkeypatch.setenv("DATAMESH_JWKS_URL", "https://idp.example/certs")
    assert AuthSettings().secret() is None


async def test_a_service_in_production_without_a_key_refuses_to_start(
    bare_environment: Path, monkeypatch: pytest.MonkeyPatch, database_urls: dict[str, str]
) -> None:
    monkeypatch.setenv("DATAMESH_ENV", "production")
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"])
    with pytest.raises(ValidationError, match=re.escape(PRODUCTION_MESSAGE)):
        async with LifespanManager(app):
            pass
    with pytest.raises(ValidationError, match=re.escape(PRODUCTION_MESSAGE)):
        create_app(FederationSettings.model_validate({"domains": {"sales": "http://s.invalid"}}))


async def test_a_service_without_any_key_refuses_to_start(
    bare_environment: Path, database_urls: dict[str, str]
) -> None:
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"])
    with pytest.raises(RuntimeError, match=re.escape(NO_KEY_MESSAGE)):
        async with LifespanManager(app):
            pass


UNUSABLE_KEYS: dict[str, tuple[Any, type[Exception], str]] = {
    "a secret file that is not there": (
        lambda folder: AuthSettings(jwt_secret_file=folder / "missing"),
        RuntimeError,
        "DATAMESH_JWT_SECRET_FILE is {folder}/missing, which is not a file.",
    ),
    "a short secret in a file": (
        lambda folder: AuthSettings(jwt_secret_file=folder / "short"),
        RuntimeError,
        "The token secret is shorter than 32 characters; use a random one (`datamesh up` "
        "creates one in the data directory).",
    ),
    "a short secret": (
        lambda folder: AuthSettings(jwt_secret="too-short"),
        ValidationError,
        "DATAMESH_JWT_SECRET must be at least 32 characters long",
    ),
}


@pytest.mark.parametrize("case", UNUSABLE_KEYS)
async def test_a_service_with_an_unusable_key_refuses_to_start(
    bare_environment: Path, database_urls: dict[str, str], case: str
) -> None:
    make, error, message = UNUSABLE_KEYS[case]
    folder = bare_environment.parent
    (folder / "short").write_text("too-short\n")
    with pytest.raises(error, match=re.escape(message.format(folder=folder))):
        app = create_domain_app(
            domain("sales"), database_url=database_urls["sales"], auth=make(folder)
        )
        async with LifespanManager(app):
            pass


def test_a_verified_token_is_remembered_for_a_minute_and_never_past_its_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.security.auth import TokenVerifier

    verifier = TokenVerifier(AuthSettings(jwt_secret=TEST_SECRET))
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    short = token("sales:read", ttl=dt.timedelta(seconds=30))
    first = verifier.verify(short)
    assert (first.subject, first.scopes) == ("tests", frozenset({"sales:read"}))
    assert verifier.verify(short) == first
    assert len(decoded) == 1  # the second use is not decoded again
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)  # past exp and its 30 s of leeway
    verifier.verify(short)  # (PyJWT's own clock is not moved: it still finds it valid)
    assert len(decoded) == 2  # past its expiry, a token is verified again, never remembered
    long = token("sales:read", ttl=dt.timedelta(hours=1))
    monkeypatch.setattr(time, "time", lambda: now)
    verifier.verify(long)
    monkeypatch.setattr(time, "time", lambda: now + 60.5)  # remembered a minute at most
    verifier.verify(long)
    assert len(decoded) == 4
