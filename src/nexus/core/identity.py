"""Who is calling: the anonymous principal when auth is off, API keys when it is on.

API keys look like `nxk_<key id>_<secret>`; only a SHA-256 of the high-entropy secret is stored,
so a lookup costs one hash, not a password-hashing round. Imports only core and errors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from nexus.core.ports import Clock, KeyStore
from nexus.core.tenancy.model import check_tenant_id
from nexus.core.types import ANONYMOUS, ApiKey, Channel, Credential, Principal
from nexus.errors import AuthenticationError, ConfigurationError

KEY_PREFIX = "nxk"
_KEY_ID_BYTES = 6
_SECRET_BYTES = 32
_KEY_SCHEMES = frozenset({"bearer", "api_key"})


class Authenticator(Protocol):
    """Turns what a caller presented into a principal, or raises `AuthenticationError`."""

    async def authenticate(self, credential: Credential | None, channel: Channel) -> Principal: ...


class AnonymousAuthenticator:
    """Auth is off: every caller is the anonymous principal."""

    async def authenticate(self, credential: Credential | None, channel: Channel) -> Principal:
        return ANONYMOUS


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: `plaintext` is shown once and never stored."""

    key: ApiKey
    plaintext: str


def check_tenant_ids(tenants: Iterable[str]) -> frozenset[str]:
    """The tenant ids a key or a user is given, each checked (`ConfigurationError` otherwise)."""
    if isinstance(tenants, str):  # a bare string would be read letter by letter
        raise ConfigurationError("Give tenants as a list of tenant ids, not one string.")
    return frozenset(check_tenant_id(tenant_id) for tenant_id in tenants)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(name: str, roles: Iterable[str], clock: Clock, tenants: Iterable[str] = ()) -> IssuedKey:
    """Mint a key (accepted on the routes of `tenants`; none: the platform's); store `.key`, hand
    `.plaintext` to the user once."""
    members_of = check_tenant_ids(tenants)
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    key = ApiKey(
        key_id=key_id,
        name=name,
        secret_hash=hash_secret(secret),
        roles=frozenset(roles),
        created_at=clock.now(),
        tenants=members_of,
    )
    return IssuedKey(key=key, plaintext=f"{KEY_PREFIX}_{key_id}_{secret}")


def parse_api_key(token: str) -> tuple[str, str] | None:
    """Split `nxk_<id>_<secret>` into (id, secret); None when it is not shaped like a key."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or len(key_id) != 2 * _KEY_ID_BYTES or not secret:
        return None
    return key_id, secret


class ApiKeyAuthenticator:
    """Bearer API keys checked against the key store, with a short positive cache.

    The cache bounds how long a key revoked by another process keeps working (`cache_ttl_s`);
    revocations through this process take effect at once via `forget`.
    """

    def __init__(self, keys: KeyStore, clock: Clock, *, cache_ttl_s: float) -> None:
        self._keys = keys
        self._clock = clock
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[ApiKey, Principal, float]] = {}

    async def authenticate(self, credential: Credential | None, channel: Channel) -> Principal:
        if credential is None:
            raise AuthenticationError("An API key is required: send it as a bearer token.")
        if credential.scheme not in _KEY_SCHEMES:
            raise AuthenticationError("Send the API key as a bearer token or in the X-API-Key header.")
        parsed = parse_api_key(credential.secret)
        if parsed is None:
            raise AuthenticationError("The credential is not a valid API key.")
        key_id, secret = parsed
        entry = await self._lookup(key_id)
        if entry is None or not hmac.compare_digest(entry[0].secret_hash, hash_secret(secret)):
            raise AuthenticationError("The API key is unknown, revoked or wrong.")
        return entry[1]

    def forget(self, key_id: str | None = None) -> None:
        """Drop one cached key, or all of them."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    async def _lookup(self, key_id: str) -> tuple[ApiKey, Principal] | None:
        """The active key and the principal it stands for; None for unknown or revoked keys."""
        now = self._clock.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[2] < self._ttl:
            return hit[0], hit[1]
        key = await self._keys.get(key_id)
        if key is None or key.is_revoked:
            self._cache.pop(key_id, None)
            return None
        principal = Principal(
            id=f"key:{key.key_id}",
            kind="api_key",
            roles=key.roles,
            attributes={"name": key.name},
            name=key.name,
            tenants=key.tenants,
        )
        if self._ttl > 0:
            self._cache[key_id] = (key, principal, now)
        return key, principal
