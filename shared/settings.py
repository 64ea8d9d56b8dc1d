"""Settings every service reads from its environment (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
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
    lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a crashed holder blocks a plan, step or outbox."
    )

    @property
    def database_name(self) -> str:
        return self.mongodb_database or f"clinicflow_{self.service_name}"
