"""Authentication, role checks and rate limits for every `/v1` route: one dependency a service.

Each service lists its routes once, `(method, path) -> Permission`, and mounts `Access.guard` on
its API router. The guard authenticates the bearer token (an API key from the compacted
`access_keys` topic, or an OpenID Connect JWT), refuses a role without the route's permission,
counts the request against the token's rate limit and leaves the principal on the request. A
route missing from the table is refused to everybody, so a new route cannot ship unguarded.

Site scope depends on the resource, so handlers check it with the principal (`require_site`
for a site named in the request, `visible` for a resource read by id).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from shared.access import AccessKey, Permission, Principal, matches, split_token
from shared.errors import Forbidden, NotFound, RateLimited, Unauthorized
from shared.oidc import InvalidToken, OidcVerifier

T = TypeVar("T")
RouteTable = Mapping[tuple[str, str], Permission]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`clinicflow keys create`) or an OpenID Connect access token.",
)


class KeyDirectory(Protocol):
    """The view of the access-keys topic."""

    def get(self, key: str) -> AccessKey | None: ...


class Access:
    """Turns a bearer token into a principal and enforces the route table."""

    def __init__(
        self,
        keys: KeyDirectory,
        routes: RouteTable,
        *,
        oidc: OidcVerifier | None = None,
        rate_limit: str = "600/minute",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.keys = keys
        self.routes = routes
        self.oidc = oidc
        self.clock = clock
        self._limit: RateLimitItem = parse(rate_limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def authenticate(self, token: str) -> Principal:
        parts = split_token(token)
        if parts is not None:
            record = self.keys.get(parts[0])
            if record is None or not matches(record, parts[1]):
                raise Unauthorized("unknown API key")
            if not record.active(self.clock()):
                raise Unauthorized("this API key is revoked or expired")
            return record.principal()
        if self.oidc is None:
            raise Unauthorized("unknown API key")
        try:
            return await self.oidc.principal(token)
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from exc

    def _count(self, principal: Principal) -> None:
        identity = f"{principal.kind}:{principal.subject}"
        if self._limiter.hit(self._limit, identity):
            return
        reset = self._limiter.get_window_stats(self._limit, identity).reset_time
        raise RateLimited(max(1, math.ceil(reset - time.time())))

    async def guard(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        """The FastAPI dependency of every guarded route."""
        if credentials is None:
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        principal = await self.authenticate(credentials.credentials)
        route = request.scope.get("route")
        permission = self.routes.get((request.method, getattr(route, "path", "")))
        if permission is None or not principal.may(permission):
            raise Forbidden(f"the {principal.role.value} role may not use this route")
        self._count(principal)
        request.state.principal = principal
        return principal


async def caller(request: Request) -> Principal:
    """The principal the guard left on the request (routes declare it as a dependency).

    A coroutine although it awaits nothing: FastAPI runs a plain function dependency in its
    thread pool, a thread handoff on every request."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require_site(principal: Principal, site_id: str, field: str = "site_id") -> None:
    """A site named in the request must be one of the caller's sites (403 otherwise)."""
    if not principal.sees(site_id):
        raise Forbidden(f"{field}: your token does not cover site {site_id!r}")


def visible(principal: Principal, site_id: str | None, found: T | None, what: str) -> T:
    """A resource read or changed by id: another site's answers 404, as if it did not exist."""
    if found is None or not principal.sees(site_id):
        raise NotFound(f"no {what}")
    return found
