"""Where the CLI finds Kafka and the services: the services' own environment variables, plus
the services' URLs and an ops API key (SPEC section 9)."""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings import ServiceSettings
from shared.topics import Topics

SERVICES = ("intake", "scheduler", "notifier")


class CliSettings(ServiceSettings):
    service_name: str = "cli"
    intake_url: str = "http://127.0.0.1:8001"
    scheduler_url: str = "http://127.0.0.1:8002"
    notifier_url: str = "http://127.0.0.1:8003"
    api_key: SecretStr | None = None
    """`CLINICFLOW_API_KEY`: a key of the `ops` role, for the services' `/v1/ops` routes."""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def urls(self) -> dict[str, str]:
        return {name: str(getattr(self, f"{name}_url")).rstrip("/") for name in SERVICES}
