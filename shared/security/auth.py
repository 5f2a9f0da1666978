"""Who is calling, and what they may do: bearer tokens (JWT) with per-domain scopes.

Scopes: `<domain>:read`, `<domain>:pii`, `<domain>:write` for each domain, `mesh:read`, and
`admin` (everything). Tokens are HS256 with a secret from the settings (or the data directory
that `datamesh up` manages), or RS256/ES256 from a JWKS (URL or file) of an identity provider.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from shared.errors import Problem, ServiceUnavailable

ADMIN = "admin"
SECRET_FILE = "jwt-secret"
MIN_SECRET_LENGTH = 32
# where `require` keeps the verified principal: the request's own ASGI scope, never the
# lifespan state (`request.state`), which some servers and test harnesses share between requests
_PRINCIPAL_KEY = "datamesh.principal"
# verified tokens are remembered this long (their expiry is checked on every use), this many
_VERIFIED_TTL_SECONDS = 60.0
_VERIFIED_MAX = 4096


def personas(domains: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The personas `datamesh token --persona` mints for these domains: admin; for each domain
    `<domain>_analyst` (its products and the mesh's metrics, PII masked); and analyst (every
    domain's products and the mesh, PII masked: the notebooks' persona)."""
    return {
        "admin": (ADMIN,),
        **{f"{d}_analyst": (f"{d}:read", "mesh:read") for d in domains},
        "analyst": (*(f"{d}:read" for d in domains), "mesh:read"),
    }


def known_scopes(domains: tuple[str, ...]) -> tuple[str, ...]:
    """Every scope a token can carry for these domains."""
    rights = (
        "read",
        "pii",
        "write",
        "admin",
    )  # admin: the owner's corrections (shared.writing.corrections)
    per_domain = tuple(f"{d}:{right}" for d in domains for right in rights)
    return (*per_domain, "mesh:read", ADMIN)


_HMAC_ALGORITHMS = ["HS256"]
_KEY_ALGORITHMS = ["RS256", "ES256"]


class AuthSettings(BaseSettings):
    """How tokens are verified (prefix DATAMESH_). No secret has a default."""

    model_config = SettingsConfigDict(env_prefix="DATAMESH_", env_file=".env", extra="ignore")

    env: str = "development"
    data_dir: Path = Path(".datamesh")
    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwt_issuer: str = "datamesh"
    jwt_audience: str = "datamesh"
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)

    @model_validator(mode="after")
    def _production_needs_explicit_keys(self) -> AuthSettings:
        explicit = self.jwt_secret or self.jwt_secret_file or self.jwks_url or self.jwks_file
        if self.env == "production" and not explicit:
            raise ValueError(
                "DATAMESH_ENV=production needs an explicitly configured token key: set "
                "DATAMESH_JWT_SECRET or DATAMESH_JWT_SECRET_FILE (HS256), or DATAMESH_JWKS_URL or "
                "DATAMESH_JWKS_FILE (RS256/ES256)"
            )
        if self.jwt_secret and len(self.jwt_secret.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"DATAMESH_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters long"
            )
        return self

    def secret(self) -> str | None:
        """The HS256 secret: configured, from a configured file, or the data directory's."""
        if self.jwt_secret:
            return self.jwt_secret.get_secret_value()
        path = self.jwt_secret_file
        if path is None and self.env != "production" and not (self.jwks_url or self.jwks_file):
            path = self.data_dir / SECRET_FILE
        if path is not None and path.exists():
            return path.read_text().strip() or None
        return None


def ensure_secret(data_dir: Path) -> Path:
    """The data directory's token secret, created (random, mode 0600) on first use."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text().strip():
        if path.stat().st_mode & 0o077:  # readable by others: only its owner may read it
            path.chmod(0o600)
        return path
    path.unlink(missing_ok=True)  # an empty file left by an interrupted first run
    # created with mode 0600 and exclusively: never readable by others, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path


def mint_token(
    secret: str,
    scopes: list[str] | tuple[str, ...],
    *,
    ttl: dt.timedelta,
    subject: str = "datamesh-user",
    issuer: str = "datamesh",
    audience: str = "datamesh",
) -> str:
    """A signed HS256 token carrying the scopes (space-separated `scope` claim)."""
    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "iss": issuer,
        "aud": audience,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class Principal:
    """The verified caller."""

    subject: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether the caller holds the scope (admin holds every scope)."""
        return ADMIN in self.scopes or scope in self.scopes


def _quotable(text: str) -> str:
    """Text safe inside a quoted header parameter (RFC 6750's error_description characters:
    printable ASCII without `"` and `\\`): the token's own values may be anything."""
    return re.sub(r"[^\x20\x21\x23-\x5b\x5d-\x7e]", "'", text)


def _shown(value: Any) -> str:
    """A value taken from an unverified token, shortened for a message."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:40] + "..."


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token"):
        challenge = (
            f'Bearer realm="datamesh", error="{error}", error_description="{_quotable(detail)}"'
        )
        if error == "missing_token":
            challenge = 'Bearer realm="datamesh"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(Problem):
    status = 403
    code = "insufficient_scope"
    title = "Forbidden"

    def __init__(self, scope: str, detail: str | None = None, **extra: Any):
        super().__init__(
            detail or f"This request needs the scope '{scope}', which the token does not carry.",
            headers={
                "WWW-Authenticate": f'Bearer realm="datamesh", error="insufficient_scope", scope="{scope}"'
            },
            scope=scope,
            **extra,
        )


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(str(s) for s in raw)
    return frozenset()


class TokenVerifier:
    """Verifies bearer tokens against the configured secret or JWKS."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        configured = settings.jwt_secret_file
        if configured is not None and not configured.is_file():
            raise RuntimeError(f"DATAMESH_JWT_SECRET_FILE is {configured}, which is not a file.")
        self._secret = settings.secret()
        if self._secret is not None and len(self._secret) < MIN_SECRET_LENGTH:
            raise RuntimeError(
                f"The token secret is shorter than {MIN_SECRET_LENGTH} characters; use a "
                "random one (`datamesh up` creates one in the data directory)."
            )
        self._jwks_client = (
            jwt.PyJWKClient(settings.jwks_url, timeout=5) if settings.jwks_url else None
        )
        self._jwks = (
            jwt.PyJWKSet.from_json(settings.jwks_file.read_text()) if settings.jwks_file else None
        )
        # token -> (its principal, until when it is valid, when it was verified)
        self._verified: dict[str, tuple[Principal, float, float]] = {}
        self._lock = threading.Lock()
        if not (self._secret or self._jwks_client or self._jwks):
            raise RuntimeError(
                "No token key is configured: set DATAMESH_JWT_SECRET_FILE (or DATAMESH_JWT_SECRET, "
                "DATAMESH_JWKS_URL, DATAMESH_JWKS_FILE), or start the mesh with `datamesh up`, "
                "which creates a secret in the data directory."
            )

    @property
    def fetches_keys(self) -> bool:
        """Whether verifying may fetch the JWKS over the network (so not on the event loop)."""
        return self._jwks_client is not None

    def _key(self, token: str) -> tuple[Any, list[str]]:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm in _HMAC_ALGORITHMS and self._secret:
            return self._secret, _HMAC_ALGORITHMS
        if algorithm in _KEY_ALGORITHMS and self._jwks_client:
            jwk = self._jwks_client.get_signing_key_from_jwt(token)
            if jwk.algorithm_name != algorithm:  # the key decides the algorithm, not the token
                raise jwt.InvalidAlgorithmError(
                    f"the key '{_shown(jwk.key_id)}' is for {jwk.algorithm_name}, not {algorithm}"
                )
            return jwk.key, [algorithm]
        if algorithm in _KEY_ALGORITHMS and self._jwks:
            return self._jwk(header.get("kid"), algorithm).key, [algorithm]
        raise jwt.InvalidAlgorithmError(f"the algorithm '{_shown(algorithm)}' is not accepted")

    def _jwk(self, kid: Any, algorithm: str) -> jwt.PyJWK:
        """The JWKS file's key with this kid (the first one if the token names none) for the
        token's algorithm."""
        assert self._jwks is not None
        for key in self._jwks.keys:
            if (kid is None or key.key_id == kid) and key.algorithm_name == algorithm:
                return key
        named = f" with kid '{_shown(kid)}'" if kid is not None else ""
        raise jwt.InvalidTokenError(f"no {algorithm} key{named} in the JWKS")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, or a 401 saying what is wrong with it.

        A token verified in the last minute is not verified again (its expiry still is):
        clients send the same token with every request."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            principal, valid_until, verified_at = cached
            if now <= valid_until and now - verified_at < _VERIFIED_TTL_SECONDS:
                return principal
        principal, expires = self._verify(token)
        with self._lock:  # verify may run in worker threads (a JWKS that is fetched)
            self._verified.pop(token, None)
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[token] = (principal, expires + self.settings.jwt_leeway_seconds, now)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key, algorithms = self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("The token's signature does not verify with the key.") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"The token is not for this service: its audience is not "
                f"'{self.settings.jwt_audience}'."
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"The token is not from the expected issuer '{self.settings.jwt_issuer}'."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The token has no '{exc.claim}' claim.") from None
        except jwt.PyJWKClientConnectionError:
            raise ServiceUnavailable(
                "The identity provider's keys (DATAMESH_JWKS_URL) cannot be fetched; try again.",
                headers={"Retry-After": "5"},
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The token is not valid: {exc}.") from None
        return Principal(subject=str(claims["sub"]), scopes=_scopes(claims)), float(claims["exp"])


_bearer = HTTPBearer(
    auto_error=False, description="A DataMesh token: `datamesh token --persona admin`."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The request's principal (cached in the request's own scope), or 401."""
    cached = verified_principal(request.scope)
    if cached is not None:
        return cached
    if credentials is None:
        raise Unauthorized("This request needs a bearer token.", error="missing_token")
    verifier: TokenVerifier = request.app.state.token_verifier
    if verifier.fetches_keys:
        principal = await run_in_threadpool(verifier.verify, credentials.credentials)
    else:
        principal = verifier.verify(credentials.credentials)
    request.scope[_PRINCIPAL_KEY] = principal
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A route dependency: the caller must hold `scope` (401 without a valid token, else 403)."""

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = await authenticate(request, credentials)
        if not principal.allows(scope):
            raise Forbidden(scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


async def authorize(request: Request, scope: str) -> Principal:
    """What `require(scope)` does, outside FastAPI's dependency injection (a route served
    without it: shared.reading.lane): the bearer token verified, 401 without a valid one, 403
    without `scope`."""
    principal = await authenticate(request, await _bearer(request))
    if not principal.allows(scope):
        raise Forbidden(scope)
    return principal


ON_BEHALF_OF = "DataMesh-On-Behalf-Of"  # the header the mesh names its end user in
_USER = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?")


@dataclass(frozen=True)
class Caller:
    """Who a request counts as, for the rate limit and the stream bound: a token subject (or,
    for a mesh subject naming its end user, that user through the mesh), else a client address."""

    key: str
    name: str  # how a message names it
    on_behalf_of: str | None = None


def caller_of(
    principal: Principal | None,
    headers: Mapping[str, str],
    address: str | None,
    mesh_subjects: frozenset[str],
) -> Caller:
    """The caller a request counts as. The mesh reads for its users: a request of a mesh subject
    naming its end user (`DataMesh-On-Behalf-Of`, printable ASCII, at most 200 characters)
    counts as that user's, so that no user spends what every user of the mesh shares."""
    if principal is None:
        return Caller(f"address:{address or 'unknown'}", "this client address")
    subject = principal.subject
    user = headers.get(ON_BEHALF_OF.lower()) if subject in mesh_subjects else None
    if user is not None and _USER.fullmatch(user):
        return Caller(
            f"subject:{subject}:for:{user}",
            f"the token subject '{subject}' on behalf of '{user}'",
            user,
        )
    return Caller(f"subject:{subject}", f"the token subject '{subject}'")


def verified_principal(scope: MutableMapping[str, Any]) -> Principal | None:
    """The principal verified for this request (its ASGI scope), if any: for middleware such
    as the access log, after the response."""
    principal: Principal | None = scope.get(_PRINCIPAL_KEY)
    return principal


def principal_of(request: Request) -> Principal:
    """The principal an earlier `require` dependency verified for this request."""
    principal = verified_principal(request.scope)
    if principal is None:
        raise RuntimeError(f"no `require` dependency verified {request.url.path}")
    return principal
