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
    consumer_concurrency: int = Field(
        default=256,
        ge=1,
        le=256,
        description="Events the scheduler handles at once (one client's events stay in order). "
        "More at once places more bookings per round of a site's booking desk: the drain of a "
        "backlog waits on MongoDB round trips, not on CPU (docs/adr/0008).",
    )
    booking_lead_hours: int = Field(default=24, ge=0)
    booking_horizon_days: int = Field(default=180, ge=14)
    max_body_bytes: int = 64 * 1024
