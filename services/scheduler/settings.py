"""Settings of the scheduler service (environment variables, see the README)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = 8002
    sites_file: Path | None = Field(
        default=None,
        description="YAML file of sites, each created at start unless a site of its id exists.",
    )
    plan_rules_file: Path | None = Field(
        default=None, description="A chain's own plan rules and needle-depth table (YAML/JSON)."
    )
    booking_lead_hours: int = Field(default=24, ge=0)
    booking_horizon_days: int = Field(default=180, ge=14)
    max_body_bytes: int = 64 * 1024
