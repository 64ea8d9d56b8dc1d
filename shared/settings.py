"""Settings every service reads from its environment (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What a service needs to reach Kafka and MongoDB and to serve HTTP.

    The defaults match the local stack (`make up`), so nothing needs to be set there.
    """

    model_config = SettingsConfigDict(
        env_prefix="CLINICFLOW_", extra="ignore", populate_by_name=True
    )

    service_name: str = "clinicflow"
    environment: Literal["local", "test", "production"] = "local"
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "CLINICFLOW_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    mongodb_uri: str = Field(
        default="mongodb://127.0.0.1:27017/",
        validation_alias=AliasChoices("MONGODB_URI", "CLINICFLOW_MONGODB_URI"),
    )
    mongodb_database: str | None = Field(
        default=None,
        description="Database name; defaults to clinicflow_<service>.",
        validation_alias=AliasChoices("MONGODB_DATABASE", "CLINICFLOW_MONGODB_DATABASE"),
    )
    topic_prefix: str = "clinic."
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "INFO"
    consumer_concurrency: int = Field(
        default=64,
        ge=1,
        le=256,
        description="Events a consumer handles at once (one client's events stay in order); "
        "more at once lets the scheduler place more bookings per round (docs/adr/0008).",
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a crashed holder blocks a plan, step or outbox."
    )

    retention_markers_days: float = Field(
        default=14,
        gt=0,
        description="How long consumers' processed-event markers and dead-letter claims are kept.",
    )
    retention_interval_seconds: float = Field(
        default=3600, gt=0, description="How often retention prunes what has expired."
    )

    metrics_interval_seconds: float = Field(
        default=15, gt=0, description="How often consumer lag and DLQ depth are read from Kafka."
    )

    id_secret: SecretStr | None = Field(
        default=None,
        description="Keys the ids derived from request data (HMAC); required in production.",
    )
    local_id_secret_file: Path = Field(
        default=Path.home() / ".cache" / "clinicflow" / "local-id.secret",
        description="Outside production, where a generated id secret is kept when none is set.",
    )
    oidc_issuer: str | None = Field(default=None, description="Accept JWTs of this issuer.")
    oidc_audience: str | None = Field(default=None, description="The audience JWTs must name.")
    oidc_jwks_url: str | None = Field(
        default=None, description="The issuer's JWKS; found by OIDC discovery when unset."
    )
    rate_limit: str = Field(
        default="600/minute", description="Requests one token may make, e.g. `600/minute`."
    )

    @property
    def database_name(self) -> str:
        return self.mongodb_database or f"clinicflow_{self.service_name}"
