"""OpenID Connect bearer tokens checked against the identity provider's JWKS (SPEC section 6).

PyJWT does the cryptography and the claim checks (`exp`, `aud`, `iss`, signature); this module
only finds the JWKS (discovery, or `CLINICFLOW_OIDC_JWKS_URL`) and maps the clinicflow claims to
a principal. PyJWT's JWKS client is synchronous, so its fetches run in a worker thread; it caches
the keys and refetches when a token names a key id it has not seen (the provider rotated).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import jwt
from pydantic import ValidationError

from shared.access import ALL_SITES, Principal, Role

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
ROLE_CLAIM = "clinicflow_role"
SITES_CLAIM = "clinicflow_sites"


class InvalidToken(Exception):
    """The token is not one this deployment accepts; the message says why, without the token."""


def _discover_jwks_url(issuer: str) -> str:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (configured https URL)
        document = json.load(answer)
    return str(document["jwks_uri"])


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()

    async def _jwks(self) -> jwt.PyJWKClient:
        async with self._lock:
            if self._client is None:
                url = self._jwks_url
                if url is None:
                    url = await asyncio.to_thread(_discover_jwks_url, self.issuer)
                self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)
            return self._client

    async def principal(self, token: str) -> Principal:
        try:
            client = await self._jwks()
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token was refused: {type(exc).__name__}") from exc
        except OSError as exc:
            raise InvalidToken("the identity provider's keys could not be fetched") from exc
        sites = claims.get(SITES_CLAIM)
        if isinstance(sites, str):
            sites = [sites]
        try:
            return Principal(
                subject=str(claims["sub"]),
                kind="oidc",
                role=Role(str(claims.get(ROLE_CLAIM))),
                sites=frozenset(str(s) for s in sites or [] if s == ALL_SITES or s),
            )
        except (ValueError, ValidationError) as exc:
            raise InvalidToken(f"the token lacks a valid {ROLE_CLAIM} claim") from exc
