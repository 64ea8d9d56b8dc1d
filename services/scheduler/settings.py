"""Settings of the scheduler service (environment variables, see the README)."""

from __future__ import annotations

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = 8002
