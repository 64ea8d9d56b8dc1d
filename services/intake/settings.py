"""Settings of the intake service (environment variables, see the README)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"
    http_port: int = 8001
    health_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated (first encrypts); required in production.",
        validation_alias=AliasChoices("CLINICFLOW_HEALTH_KEY"),
    )
    local_key_file: Path = Field(
        default=Path.home() / ".cache" / "clinicflow" / "local-health.key",
        description="Outside production, where a generated key is kept when none is set.",
    )
    policy_file: Path | None = Field(
        default=None, description="A chain's own screening policy (YAML or JSON)."
    )
    max_body_bytes: int = 64 * 1024
    screening_validity_days: int = 90
