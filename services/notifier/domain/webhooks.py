"""An integrator's webhook subscription: which event types go to which URL, for which sites.

Only its owner (the key or user that created it) may see or end it. Ending it keeps the record,
inactive, so that its past deliveries can still be listed.
"""

from __future__ import annotations

from datetime import datetime

from shared.aggregate import Aggregate


class Webhook(Aggregate):
    webhook_id: str
    url: str
    events: list[str]
    secret: str
    owner: str
    sites: list[str]
    active: bool = True
    created_at: datetime

    def covers(self, site_id: str) -> bool:
        """An integrator's webhook receives the events of its own sites only."""
        return "*" in self.sites or site_id in self.sites

    def owned_by(self, owner: str) -> bool:
        return self.owner == owner

    def unsubscribe(self) -> bool:
        """Stop deliveries to it; False when it had ended already."""
        if not self.active:
            return False
        self.active = False
        return True
