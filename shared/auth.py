"""Who is calling, and what they may do: bearer tokens (JWT) with per-domain scopes.

Scopes: `<domain>:read`, `<domain>:pii`, `<domain>:write` for each domain, `mesh:read`, and
`admin` (everything). Tokens are HS256 with a secret from the settings (or the data directory
that `datamesh up` manages), or RS256/ES256 from a JWKS (URL or file) of an identity provider.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import Problem

ADMIN = "admin"
PERSONAS: dict[str, tuple[str, ...]] = {
    "admin": (ADMIN,),
    "sales_analyst": ("sales:read", "mesh:read"),
    "marketing_analyst": ("marketing:read", "mesh:read"),
}
SECRET_FILE = "jwt-secret"


def known_scopes(domains: tuple[str, ...]) -> tuple[str, ...]:
    """Every scope a token can carry for these domains."""
    per_domain = tuple(f"{d}:{right}" for d in domains for right in ("read", "pii", "write"))
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
        if self.jwt_secret and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("DATAMESH_JWT_SECRET must be at least 32 characters long")
        return self

    def secret(self) -> str | None:
        """The HS256 secret: configured, from a configured file, or the data directory's."""
        if self.jwt_secret:
            return self.jwt_secret.get_secret_value()
        path = self.jwt_secret_file
        if path is None and self.env != "production" and not (self.jwks_url or self.jwks_file):
            path = self.data_dir / SECRET_FILE
        if path is not None and path.exists():
            return path.read_text().strip()
        return None


def ensure_secret(data_dir: Path) -> Path:
    """The data directory's token secret, created (random, mode 0600) on first use."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
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


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token"):
        challenge = f'Bearer realm="datamesh", error="{error}", error_description="{detail}"'
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
        self._secret = settings.secret()
        self._jwks_client = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        self._jwks = (
            jwt.PyJWKSet.from_json(settings.jwks_file.read_text()) if settings.jwks_file else None
        )
        if not (self._secret or self._jwks_client or self._jwks):
            raise RuntimeError(
                "No token key is configured: set DATAMESH_JWT_SECRET_FILE (or DATAMESH_JWT_SECRET, "
                "DATAMESH_JWKS_URL, DATAMESH_JWKS_FILE), or start the mesh with `datamesh up`, "
                "which creates a secret in the data directory."
            )

    def _key(self, token: str) -> tuple[Any, list[str]]:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm in _HMAC_ALGORITHMS and self._secret:
            return self._secret, _HMAC_ALGORITHMS
        if algorithm in _KEY_ALGORITHMS and self._jwks_client:
            return self._jwks_client.get_signing_key_from_jwt(token).key, _KEY_ALGORITHMS
        if algorithm in _KEY_ALGORITHMS and self._jwks:
            kid = header.get("kid")
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key.key, _KEY_ALGORITHMS
            raise jwt.InvalidTokenError(f"no key with kid '{kid}' in the JWKS")
        raise jwt.InvalidAlgorithmError(f"the algorithm '{algorithm}' is not accepted")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, or a 401 saying what is wrong with it."""
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
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The token is not valid: {exc}.") from None
        return Principal(subject=str(claims["sub"]), scopes=_scopes(claims))


_bearer = HTTPBearer(
    auto_error=False, description="A DataMesh token: `datamesh token --persona admin`."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The request's principal (cached on the request), or 401."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if credentials is None:
        raise Unauthorized("This request needs a bearer token.", error="missing_token")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A route dependency: the caller must hold `scope` (401 without a valid token, else 403)."""

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = authenticate(request, credentials)
        if not principal.allows(scope):
            raise Forbidden(scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def principal_of(request: Request) -> Principal:
    """The principal an earlier `require` dependency verified for this request."""
    principal: Principal = request.state.principal
    return principal
