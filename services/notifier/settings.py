"""Settings of the notifier service (environment variables, see the README)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from services.notifier.domain.steps import WEBHOOK_RETRIES
from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    http_port: int = 8003
    webhooks_allow_private: bool = Field(
        default=False,
        description="Accept http and private/loopback webhook URLs (local stack and tests only).",
    )
    webhook_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) sealing webhook secrets, comma-separated (first seals); "
        "required in production.",
        validation_alias=AliasChoices("CLINICFLOW_WEBHOOK_KEY"),
    )
    local_webhook_key_file: Path = Field(
        default=Path.home() / ".cache" / "clinicflow" / "local-webhook.key",
        description="Outside production, where a generated key is kept when none is set.",
    )
    webhook_retry_delays_seconds: list[float] = Field(
        default=[delay.total_seconds() for delay in WEBHOOK_RETRIES.delays],
        min_length=1,
        description="The wait after each failed webhook attempt (JSON list of seconds); the "
        "default retries for about 27 hours.",
    )
    webhook_retry_jitter: float = Field(default=WEBHOOK_RETRIES.jitter, ge=0, lt=1)
    smtp_host: str | None = Field(default=None, description="Send aftercare emails when set.")
    smtp_port: int = 587
    smtp_sender: str = "aftercare@clinicflow.local"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_start_tls: bool = False
    sms_enabled: bool = Field(default=False, description="Send SMS through the SMS provider.")
    timer_interval_seconds: float = Field(default=1.0, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    max_body_bytes: int = 64 * 1024
    retention_deliveries_days: float = Field(
        default=90, gt=0, description="How long finished deliveries (attempt records) are kept."
    )
