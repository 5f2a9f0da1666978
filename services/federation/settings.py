"""Settings of the mesh (prefix MESH_): which domains it federates, and how patiently."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services import registered

# the mesh's own policy, as a domain's is in its declaration: the port `datamesh up` serves it
# on unless told otherwise, and the requests a caller may make per minute
SERVICE = "mesh"  # the mesh's name: its paths (/mesh/...), its metrics' service label
PORT = 8000
RATE_LIMIT_PER_MINUTE = 600


def local_registry() -> dict[str, str]:
    """Every registered domain at its default port on this machine (as `datamesh up` serves)."""
    return {d.name: f"http://127.0.0.1:{d.port}" for d in registered()}


class FederationSettings(BaseSettings):
    """The domain registry, the HTTP client's timeouts, retries and circuit breakers."""

    model_config = SettingsConfigDict(env_prefix="MESH_", env_file=".env", extra="ignore")

    domains: dict[str, str] = Field(
        default_factory=local_registry,
        description="Domain name -> base URL (JSON in MESH_DOMAINS; default: every registered "
        "domain at its default port on 127.0.0.1).",
    )
    connect_timeout_seconds: float = Field(2.0, gt=0)
    read_timeout_seconds: float = Field(30.0, gt=0)
    discovery_ttl_seconds: float = Field(60.0, ge=0)
    # reads of a domain that fail to connect, time out or answer 502/503/504 are tried again,
    # up to `retry_attempts` in all, waiting initial * 2^n (at most max) plus up to `jitter`
    # seconds between tries, and never starting a try after `retry_budget_seconds`
    retry_attempts: int = Field(3, ge=1)
    retry_initial_seconds: float = Field(0.1, ge=0)
    retry_max_seconds: float = Field(2.0, ge=0)
    retry_jitter_seconds: float = Field(0.2, ge=0)
    retry_budget_seconds: float = Field(10.0, gt=0)
    # a domain's circuit opens after this many consecutive failed calls and stays open (the
    # mesh answers 503 at once without calling it) for the cool-down, then lets one probe in
    circuit_failure_threshold: int = Field(5, ge=1)
    circuit_cooldown_seconds: float = Field(30.0, gt=0)
    # what the mesh remembers between answers (services/federation/cache.py): its inputs, by
    # their ETags, and the answers computed from them; 0 turns it off
    cache_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Bytes of Arrow data the mesh keeps between answers (inputs and answers, "
        "least recently used out first); 0: none, every answer reads every input again.",
    )
    service_token: SecretStr | None = Field(
        None, description="The mesh's token for the domains (else minted from the local secret)."
    )
    # the engine that computes the metrics (docs/mesh.md, "Engines"): the in-process DuckDB over
    # the products read over HTTP, or Apache Spark over the domains' lake snapshots
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="duckdb (default: HTTP reads, in-process) or spark (the lake)."
    )
    lake_url: str | None = Field(
        None,
        description="The lake the Spark engine reads: a local path or s3://bucket/prefix, laid "
        "out <lake>/<domain>/<product>/v<version>/snapshot=<id>/ with a _latest pointer.",
    )
    lake_s3_endpoint: str | None = Field(
        None,
        description="An S3-compatible store's endpoint for an s3:// lake (e.g. a MinIO's "
        "http://127.0.0.1:9000; unset: AWS), for the pointers and manifests and for Spark's "
        "s3a. Credentials: AWS's standard variables.",
    )
    spark_master: str = Field(
        "local[*]", description="Spark's master: local[N], spark://host:port or k8s://..."
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="More Spark settings (JSON in MESH_SPARK_CONF), e.g. the driver's memory "
        "or s3a's endpoint and credentials; they win over the mesh's own.",
    )
    spark_local_dir: str | None = Field(
        None,
        description="Spark's scratch and warehouse directory (default: a temporary directory "
        "of the mesh's process, removed when it stops).",
    )

    @model_validator(mode="after")
    def _spark_needs_a_lake(self) -> FederationSettings:
        if self.engine == "spark" and not self.lake_url:
            raise ValueError("MESH_ENGINE=spark reads the lake: set MESH_LAKE_URL")
        return self
