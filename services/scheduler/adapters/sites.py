"""Sites in MongoDB; every change is published on `clinic.site_updated` through the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from shared.envelope import Record
from shared.events import SiteUpdated
from shared.locks import Locks
from shared.outbox import lease_name, push_outbox

SITES = "sites"


class SitesFile(BaseModel):
    """The YAML file of sites that seeds the scheduler at start (`CLINICFLOW_SITES_FILE`).

    A site of the file is created only when no site of that id is stored yet, so that a restart
    never undoes a change made through `PUT /v1/sites/{site_id}`.
    """

    sites: list[SiteUpdated]


def read_sites_file(path: Path) -> list[SiteUpdated]:
    return SitesFile.model_validate(yaml.safe_load(path.read_text())).sites


class SiteRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], locks: Locks) -> None:
        self.sites = db[SITES]
        self.locks = locks

    async def get(self, site_id: str) -> SiteUpdated | None:
        document = await self.sites.find_one({"_id": site_id})
        if document is None:
            return None
        return SiteUpdated.model_validate(document["site"])

    async def put(
        self, site: SiteUpdated, records: list[Record], *, only_if_new: bool = False
    ) -> bool:
        """Store the site and its event in one update; True when the site is new.

        With `only_if_new` a stored site is left as it is: the sites file seeds, the API rules.
        """
        async with self.locks.hold(lease_name(self.sites, site.site_id)):
            if only_if_new and await self.sites.find_one({"_id": site.site_id}, {"_id": 1}):
                return False
            result = await self.sites.update_one(
                {"_id": site.site_id},
                push_outbox(
                    {
                        "$set": {
                            "site": site.model_dump(mode="json"),
                            "updated_at": datetime.now(UTC),
                        }
                    },
                    records,
                ),
                upsert=True,
            )
        return result.upserted_id is not None
