"""The first factor: a password checked against the local hash or by the directory, and the user
records that directory and single sign-on identities are linked to.

Password hashing runs in worker threads, a few at a time. Must not import the service (it imports this).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from nexus.core.auth.model import ExternalIdentity, User
from nexus.core.auth.parts import IdentityParts
from nexus.core.ports import Clock
from nexus.errors import AuthenticationError

_HASHING_AT_ONCE = 2
T = TypeVar("T")


class FirstFactor:
    """Checks passwords (local hash, else the directory) and links external identities to users."""

    def __init__(self, parts: IdentityParts, clock: Clock) -> None:
        self._p = parts
        self._clock = clock
        # Password hashing is CPU and memory heavy (19 MiB each): a burst of logins queues here
        # instead of taking every core and every worker thread from the rest of the server.
        self._hash_slots = asyncio.Semaphore(_HASHING_AT_ONCE)

    async def _hashing(self, work: Callable[..., T], *args: str) -> T:
        """Run one password-hashing call in a worker thread, at most `_HASHING_AT_ONCE` at a time."""
        async with self._hash_slots:
            return await asyncio.to_thread(work, *args)

    async def hash(self, password: str) -> str:
        return await self._hashing(self._p.hasher.hash, password)

    async def verify(self, username: str, password: str) -> User | None:
        """The account `password` opens (as it stood when checked), or None."""
        user = await self._p.users.find(username)
        if user is not None and user.source == "local":
            encoded = user.password_hash or ""
            ok = await self._hashing(self._p.hasher.verify, encoded, password)
            if not ok or user.disabled:
                return None
            if await self._hashing(self._p.hasher.needs_rehash, encoded):
                return await self._rehash(user, password)
            return user
        directory = self._p.directory
        if directory is not None and (user is None or user.source == "ldap"):
            identity = await directory.authenticate(username, password)
            if identity is None:
                return None
            linked = await self.link(identity)
            return None if linked.disabled else linked
        # No account to check against: spend the time a real check would, so timing says nothing.
        await self._hashing(self._p.hasher.verify_against_nothing, password)
        return None

    async def _rehash(self, user: User, password: str) -> User | None:
        rehashed = await self.hash(password)
        current = await self._p.users.get(user.user_id)
        if current is None or current.disabled:
            return None
        if current.password_hash != user.password_hash:
            # Changed meanwhile, by a concurrent login's rehash or by a reset: the login stands only
            # if the password opens the account as it is now, and nothing is written back over it.
            ok = await self._hashing(self._p.hasher.verify, current.password_hash or "", password)
            return current if ok else None
        upgraded = replace(current, password_hash=rehashed)
        await self._p.users.update(upgraded)
        return upgraded

    async def link(self, identity: ExternalIdentity) -> User:
        """The user record for a directory or SSO identity, created or refreshed from it.

        Roles and attributes follow the provider at every login. A local account of the same name
        is never taken over: that login is refused.
        """
        user_id = f"{identity.source}:{identity.subject}"
        existing = await self._p.users.get(user_id)
        if existing is None:
            clash = await self._p.users.find(identity.username)
            if clash is not None:
                raise AuthenticationError(
                    "This account name is already taken by another sign-in method; ask an administrator."
                )
            user = User(
                user_id=user_id,
                username=identity.username,
                source=identity.source,
                roles=identity.roles,
                created_at=self._clock.now(),
                attributes=dict(identity.attributes),
            )
            await self._p.users.add(user)
            return user
        refreshed = replace(existing, roles=identity.roles, attributes=dict(identity.attributes))
        if refreshed != existing:
            await self._p.users.update(refreshed)
        return refreshed
