"""The pseudonymous join key: a keyed hash of a value, equal across domains, computed inside
PostgreSQL with built-in functions only.

email_key = hex(HMAC-SHA256(secret, lower(btrim(email)))), where HMAC(K, m) =
sha256((K' xor opad) || sha256((K' xor ipad) || m)) and K' is the secret as UTF-8 bytes
(hashed with SHA-256 first when longer than 64 bytes) padded with zero bytes to 64 (RFC 2104).
The two padded keys are computed here and bound as bytea parameters: the secret never appears
in SQL text, and the values it hashes never leave the database.

The secret is mesh-wide (every domain must use the same one, or keys do not match):
DATAMESH_PSEUDONYM_SECRET or DATAMESH_PSEUDONYM_SECRET_FILE; `datamesh up` creates one in the
data directory. There is no default.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FILE = "pseudonym-secret"
_BLOCK = 64  # SHA-256's block size in bytes
_MIN_LENGTH = 32


class PseudonymSettings(BaseSettings):
    """Where the pseudonymisation secret comes from (prefix DATAMESH_). No default value."""

    model_config = SettingsConfigDict(env_prefix="DATAMESH_", env_file=".env", extra="ignore")

    env: str = "development"
    data_dir: Path = Path(".datamesh")
    pseudonym_secret: SecretStr | None = None
    pseudonym_secret_file: Path | None = None

    @model_validator(mode="after")
    def _strong_and_explicit(self) -> PseudonymSettings:
        if self.env == "production" and not (self.pseudonym_secret or self.pseudonym_secret_file):
            raise ValueError(
                "DATAMESH_ENV=production needs an explicitly configured pseudonymisation secret: "
                "set DATAMESH_PSEUDONYM_SECRET or DATAMESH_PSEUDONYM_SECRET_FILE (the same in "
                "every domain)"
            )
        if self.pseudonym_secret and len(self.pseudonym_secret.get_secret_value()) < _MIN_LENGTH:
            raise ValueError(
                f"DATAMESH_PSEUDONYM_SECRET must be at least {_MIN_LENGTH} characters long"
            )
        return self

    def configured(self) -> bool:
        """Whether a secret is configured explicitly (not the data directory's)."""
        return bool(self.pseudonym_secret or self.pseudonym_secret_file)

    def secret(self) -> str | None:
        """The secret: configured, from a configured file, or (outside production) the data
        directory's, which `datamesh up` creates."""
        if self.pseudonym_secret:
            return self.pseudonym_secret.get_secret_value()
        path = self.pseudonym_secret_file
        if path is None and self.env != "production":
            path = self.data_dir / SECRET_FILE
        if path is not None and path.exists():
            return path.read_text().strip() or None
        return None

    def key(self) -> PseudonymKey:
        """The key of the configured secret, or an error saying how to configure one."""
        secret = self.secret()
        if secret is None:
            raise RuntimeError(
                "No pseudonymisation secret is configured (it keys email_key, the mesh's join "
                "key): set DATAMESH_PSEUDONYM_SECRET_FILE or DATAMESH_PSEUDONYM_SECRET to the "
                "same secret in every domain, or start the mesh with `datamesh up`, which "
                "creates one in the data directory."
            )
        return PseudonymKey.from_secret(secret)


def ensure_pseudonym_secret(data_dir: Path) -> Path:
    """The data directory's pseudonymisation secret, created (random, mode 0600) on first use."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path


def normalise(value: str) -> str:
    """What is hashed: the value trimmed of spaces and lower-cased (PostgreSQL's
    lower(btrim(value)); for ASCII text Python's value.strip(" ").lower())."""
    return value.strip(" ").lower()


def pseudonym(secret: str, value: str) -> str:
    """The key of a value, computed in Python (what the database computes, for reference)."""
    return hmac.new(secret.encode(), normalise(value).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class PseudonymKey:
    """The secret as HMAC-SHA256's two padded keys (never printed)."""

    inner: bytes = field(repr=False)  # K' xor ipad (0x36)
    outer: bytes = field(repr=False)  # K' xor opad (0x5c)

    @classmethod
    def from_secret(cls, secret: str) -> PseudonymKey:
        key = secret.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        return cls(
            inner=bytes(b ^ 0x36 for b in key),
            outer=bytes(b ^ 0x5C for b in key),
        )

    def sql(self, value: str, bind: Callable[[bytes], str]) -> str:
        """The SQL expression of the hex key of a text expression; `bind` binds a bytea
        parameter and returns its placeholder."""
        message = f"convert_to(lower(btrim({value})), 'UTF8')"
        inner = f"sha256({bind(self.inner)} || {message})"
        return f"encode(sha256({bind(self.outer)} || {inner}), 'hex')"
