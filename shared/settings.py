"""Runtime settings, from the environment (and a .env file), never from code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every DataMesh process shares (prefix DATAMESH_)."""

    model_config = SettingsConfigDict(env_prefix="DATAMESH_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".datamesh")
    json_page_size: int = Field(1000, ge=1)
    max_page_size: int = Field(10_000, ge=1)
    stream_batch_rows: int = Field(10_000, ge=100)
    pool_size: int = Field(10, ge=1)
    pool_timeout_seconds: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(30_000, ge=0)
    # on SIGTERM a service stops accepting and lets in-flight requests finish for up to this
    # long (uvicorn's --timeout-graceful-shutdown, which `datamesh up` sets from it)
    shutdown_grace_seconds: int = Field(20, ge=0)
    quality_interval_seconds: float = Field(0.0, ge=0)  # scheduled quality runs; 0: off
    # how often a domain service looks for changes its materialized views miss; 0: never
    view_refresh_seconds: float = Field(1.0, ge=0)
    # GET /metrics and the instrumentation of requests (docs/observability.md)
    metrics_enabled: bool = True
    # how often a domain service reads its products' rows, freshness and latest quality run
    # for its metrics; 0: only at start and after quality runs
    metrics_state_seconds: float = Field(30.0, ge=0)
    # requests per minute per token subject (per client address without a valid token); None:
    # the service's declared rate (a domain's declaration, the mesh's settings); 0: no limit
    rate_limit_per_minute: int | None = Field(None, ge=0)
    # where the rate limits' moving windows are counted, a `limits` storage URI: memory:// (each
    # process counts its own, a caller's rate divided among the workers of one server), or a
    # store every worker and replica shares: redis://host:port/db, rediss:// (TLS),
    # redis+unix:///path, redis+sentinel://host:port/service, redis+cluster://host:port,...
    # (shared.serving.rate_limits, docs/security.md)
    rate_limit_storage: str = "memory://"
    max_body_bytes: int = Field(1_048_576, ge=0)
    # the processes serving this service from one listening socket: set by serve_workers for
    # its workers (`--workers N`), never by hand; the memory store divides rates by it
    workers: int = Field(1, ge=1)
    # of the processes serving a domain (workers, replicas) one leads its background jobs (view
    # refresh, quality schedule, lake export: shared.storage.leader); the others try to take
    # the lead this often, and the leader checks that it still holds it
    leader_check_seconds: float = Field(2.0, gt=0)
    # the addresses (comma-separated IPs or CIDRs; `*` for any) of reverse proxies whose
    # X-Forwarded-For / X-Forwarded-Proto are trusted; None: none, the peer address is the
    # client's (shared.serving.server)
    forwarded_allow_ips: str | None = None
    # a request line and headers must arrive within this long (else 408, closed); 0: no limit
    header_timeout_seconds: float = Field(10.0, ge=0)
    # the longest wait for the next part of a request body (else 408, closed); 0: no limit
    body_timeout_seconds: float = Field(10.0, ge=0)
    # connections open at once from one client address (one more: 429, closed); 0: no cap
    max_connections_per_address: int = Field(100, ge=0)
    # a streamed response the client takes nothing of for this long is aborted and gives back
    # its database connection (shared.reading.streams); 0: never
    stream_send_timeout_seconds: float = Field(30.0, ge=0)
    # streamed reads (CSV, NDJSON, Arrow, Parquet) at once per caller, and in all (None: half
    # the pool, at least 1): the rest of the pool stays free for pages, single rows, writes and
    # the view refresher. Over a bound a stream waits up to the pool timeout for a slot, then
    # is a 429 (its caller's bound) or 503 (the service's)
    max_streams_per_caller: int = Field(3, ge=1)
    max_streams: int | None = Field(None, ge=1)
    # a backstop on every pooled connection and on the service role: the server ends a session
    # whose transaction sits idle this long (a stalled stream's cursor); 0: off
    idle_in_transaction_timeout_ms: int = Field(60_000, ge=0)
    # readyz opens a connection of its own and runs a statement within this long, else 503
    readiness_timeout_seconds: float = Field(2.0, gt=0)
    # the lake output port (shared.publishing.lake, docs/lake.md): where snapshots of the
    # products are exported (a local path or s3://bucket/prefix; None: no lake), how often a
    # domain service exports its products there (0: never; `datamesh lake export` on demand),
    # how many complete snapshots of each product are kept, and the S3 endpoint of an
    # S3-compatible store (MinIO, ...; None: AWS); credentials are AWS's standard variables
    lake_url: str | None = None
    lake_export_seconds: float = Field(0.0, ge=0)
    lake_keep: int = Field(5, ge=1)
    lake_s3_endpoint: str | None = None
    # tests only: the exporter sleeps this long after each file it writes, so that a test can
    # stop it in the middle of a snapshot (tests/test_lake.py)
    lake_pause_seconds: float = Field(0.0, ge=0)

    @property
    def stream_slots(self) -> int:
        """Streams served at once in all (max_streams, else half the pool, at least 1)."""
        return self.max_streams or max(1, self.pool_size // 2)

    # browser origins allowed to call the services (CORS): a JSON list or comma-separated
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # token subjects of the mesh: a request of theirs that names the end user it reads for
    # (DataMesh-On-Behalf-Of) counts against that user's rate limit, not the mesh's own
    mesh_subjects: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["mesh"])
    # the service's public base URL (https://data.example.com): absolute links are built from
    # it; unset, links are relative (never from the request's Host header)
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError(
                f"public_url '{value}' is not a base URL like https://data.example.com"
            )
        return value.rstrip("/")

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        # checked where the store is opened (shared.serving.rate_limits.open_storage), whose
        # errors never repeat the store's password (a validation error here would)
        return value.strip() or "memory://"

    @field_validator("lake_url", "lake_s3_endpoint")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @model_validator(mode="after")
    def _lake_to_export_to(self) -> ServiceSettings:
        if self.lake_export_seconds > 0 and not self.lake_url:
            raise ValueError(
                "DATAMESH_LAKE_EXPORT_SECONDS schedules exports to the lake, but no lake is "
                "configured: set DATAMESH_LAKE_URL (a local path or s3://bucket/prefix), or set "
                "DATAMESH_LAKE_EXPORT_SECONDS=0"
            )
        return self

    @field_validator("cors_origins", "mesh_subjects", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or not origin.startswith(("https://", "http://")):
                raise ValueError(
                    f"CORS origin '{origin}' is not an exact origin like https://notebooks.example"
                )
        return [origin.rstrip("/") for origin in value]


class DatabaseSettings(BaseSettings):
    """Where one domain's database lives: `<DOMAIN>_DATABASE_URL` (what the service connects
    as), `<DOMAIN>_MIGRATION_DATABASE_URL` (the schema owner, for migrations; default the
    same), else embedded."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    migration_database_url: str | None = None

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ValueError(f"database_url '{value.split('@')[-1]}' is not a postgresql:// URL")
        return value


def database_url_for(domain: str) -> str | None:
    """The configured URL of a domain's database (`<DOMAIN>_DATABASE_URL`), or None."""
    return DatabaseSettings(_env_prefix=f"{domain.upper()}_").database_url


def migration_database_url_for(domain: str) -> str | None:
    """The URL migrations use for a domain's database: `<DOMAIN>_MIGRATION_DATABASE_URL`, else
    `<DOMAIN>_DATABASE_URL`, else None."""
    configured = DatabaseSettings(_env_prefix=f"{domain.upper()}_")
    return configured.migration_database_url or configured.database_url


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
