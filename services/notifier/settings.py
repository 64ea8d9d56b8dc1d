"""Settings of the notifier service (environment variables, see the README)."""

from __future__ import annotations

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    http_port: int = 8003
