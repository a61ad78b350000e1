"""Turning a presented credential into a principal, and the step-up rule for sensitive calls."""

from __future__ import annotations

from collections.abc import Iterable

from nexus.core.auth.policy import SessionPolicy
from nexus.core.auth.service import IdentityService
from nexus.core.identity import KEY_PREFIX, ApiKeyAuthenticator
from nexus.core.ports import Clock
from nexus.core.types import Channel, Credential, Principal
from nexus.errors import AuthenticationError, ReauthenticationRequiredError


class CredentialAuthenticator:
    """API keys (`nxk_...`) and session-derived channel tokens (JWTs), each when enabled."""

    def __init__(self, *, api_keys: ApiKeyAuthenticator | None, identity: IdentityService | None) -> None:
        self._keys = api_keys
        self._identity = identity

    async def authenticate(self, credential: Credential | None, channel: Channel) -> Principal:
        if credential is None:
            raise AuthenticationError("Log in, or send an API key, as a bearer token.")
        if credential.scheme == "api_key" or credential.secret.startswith(f"{KEY_PREFIX}_"):
            if self._keys is None:
                raise AuthenticationError("API keys are not accepted here; log in instead.")
            return await self._keys.authenticate(credential, channel)
        if credential.scheme != "bearer" or self._identity is None:
            raise AuthenticationError("Send the token as a bearer token.")
        return await self._identity.authenticate(credential.secret, channel)

    def forget(self, key_id: str | None = None) -> None:
        if self._keys is not None:
            self._keys.forget(key_id)
        if self._identity is not None and key_id is None:
            self._identity.forget_sessions()


class StepUp:
    """Principals holding, or workflows tagged with, a name in `require_reauth_for` need a recent login."""

    def __init__(self, policy: SessionPolicy, clock: Clock) -> None:
        self._names = policy.require_reauth_for
        self._max_age = policy.reauth_max_age_s
        self._clock = clock

    @property
    def active(self) -> bool:
        return bool(self._names)

    def check(self, principal: Principal, tags: Iterable[str]) -> str | None:
        """Raise `ReauthenticationRequiredError` when due; returns the reason it applied, if any."""
        hits = self._names.intersection(principal.roles).union(self._names.intersection(tags))
        if not hits:
            return None
        why = ", ".join(sorted(hits))
        if principal.auth_time is None:
            raise ReauthenticationRequiredError(
                f"Calls marked {why} need a recent interactive login; an API key cannot give one.",
                max_age=int(self._max_age),
            )
        age = (self._clock.now() - principal.auth_time).total_seconds()
        if age > self._max_age:
            raise ReauthenticationRequiredError(
                f"Calls marked {why} need an authentication younger than {int(self._max_age)} s: "
                "re-authenticate (POST /auth/reauth, or `nexus login --reauth`) and call again.",
                max_age=int(self._max_age),
            )
        return f"step-up satisfied ({why})"
