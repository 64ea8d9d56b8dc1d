"""Sites in MongoDB; every change is published on `clinic.site_updated` through the outbox."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.domain.model import Site
from shared.events import SiteUpdated
from shared.uow import AggregateStore

SITES = "sites"
FRESH_SECONDS = 1.0


class SitesFile(BaseModel):
    """The YAML file of sites that seeds the scheduler at start (`CLINICFLOW_SITES_FILE`).

    A site of the file is created only when no site of that id is stored yet, so that a restart
    never undoes a change made through `PUT /v1/sites/{site_id}`.
    """

    sites: list[SiteUpdated]


def read_sites_file(path: Path) -> list[SiteUpdated]:
    return SitesFile.model_validate(yaml.safe_load(path.read_text())).sites


class SiteStore(AggregateStore[Site]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db[SITES], Site, "site_id")
        self._recent: dict[str, tuple[float, SiteUpdated]] = {}

    async def site(self, site_id: str) -> SiteUpdated | None:
        """The site as stored, read at most once a second per site: every booking needs it,
        and a change made here is seen at once (`forget`), one made by another replica within
        `FRESH_SECONDS`."""
        now = time.monotonic()
        recent = self._recent.get(site_id)
        if recent is not None and now - recent[0] < FRESH_SECONDS:
            return recent[1]
        found = await self.get(site_id)
        if found is None:
            return None
        self._recent[site_id] = (now, found.site)
        return found.site

    def forget(self, site_id: str) -> None:
        self._recent.pop(site_id, None)
