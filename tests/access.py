"""API keys for the tests, published on the deployment's access-keys topic like the CLI does.

`StaffAuth` signs each request with the key of the role that uses that route in a clinic: the
integrator for webhooks, ops for `/metrics`, the clinic admin for everything else. Tests of
access itself build their own keys and headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence

import httpx

from clinicflow_cli import keystore
from shared.access import ALL_SITES, Role, new_key
from shared.topics import Topics


async def issue_key(
    bootstrap: str,
    prefix: str,
    role: Role = Role.CLINIC_ADMIN,
    sites: Sequence[str] = (ALL_SITES,),
    name: str = "tests",
) -> str:
    record, token = new_key(name=name, role=role, sites=list(sites), created_by="tests")
    await keystore.publish(bootstrap, Topics(prefix), record)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class StaffAuth(httpx.Auth):
    def __init__(self, tokens: dict[Role, str]) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            path = request.url.path
            role = Role.CLINIC_ADMIN
            if path.startswith("/v1/webhooks"):
                role = Role.INTEGRATOR
            elif path == "/metrics" or path.startswith("/v1/ops"):
                role = Role.OPS
            request.headers["Authorization"] = f"Bearer {self.tokens[role]}"
        yield request


async def staff(bootstrap: str, prefix: str) -> StaffAuth:
    """One all-sites key per role that `StaffAuth` uses."""
    roles = (Role.CLINIC_ADMIN, Role.INTEGRATOR, Role.OPS)
    tokens = await asyncio.gather(*(issue_key(bootstrap, prefix, role) for role in roles))
    return StaffAuth(dict(zip(roles, tokens, strict=True)))
