"""Runtime settings, from the environment (and a .env file), never from code."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeshSettings(BaseSettings):
    """Settings every DataMesh process shares (prefix DATAMESH_)."""

    model_config = SettingsConfigDict(env_prefix="DATAMESH_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".datamesh")
    json_page_size: int = Field(1000, ge=1)
    max_page_size: int = Field(10_000, ge=1)
    stream_batch_rows: int = Field(10_000, ge=100)
    pool_size: int = Field(10, ge=1)
    pool_timeout_seconds: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(30_000, ge=0)
    quality_interval_seconds: float = Field(0.0, ge=0)  # scheduled quality runs; 0: off


class DatabaseSettings(BaseSettings):
    """Where one domain's database lives: `<DOMAIN>_DATABASE_URL`, else embedded."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ValueError(f"database_url '{value.split('@')[-1]}' is not a postgresql:// URL")
        return value


def database_url_for(domain: str) -> str | None:
    """The configured URL of a domain's database (`SALES_DATABASE_URL`, ...), or None."""
    return DatabaseSettings(_env_prefix=f"{domain.upper()}_").database_url


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain postgresql:// URL."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
