"""Settings of the mesh (prefix MESH_): which domains it federates, and how patiently."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class FederationSettings(BaseSettings):
    """The domain registry and the HTTP client's timeouts."""

    model_config = SettingsConfigDict(env_prefix="MESH_", env_file=".env", extra="ignore")

    domains: dict[str, str] = Field(
        default_factory=lambda: {
            "sales": "http://127.0.0.1:8001",
            "marketing": "http://127.0.0.1:8002",
        },
        description="Domain name -> base URL (JSON in MESH_DOMAINS).",
    )
    connect_timeout_seconds: float = Field(2.0, gt=0)
    read_timeout_seconds: float = Field(30.0, gt=0)
    discovery_ttl_seconds: float = Field(60.0, ge=0)
    service_token: SecretStr | None = Field(
        None, description="The mesh's token for the domains (else minted from the local secret)."
    )
