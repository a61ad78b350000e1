"""The identity rules in force, as plain values the settings and enterprise classes build."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nexus.core.auth.model import FactorKind
from nexus.core.types import Channel

ALL_CHANNELS = frozenset(Channel)


@dataclass(frozen=True, slots=True)
class MfaPolicy:
    """When a second factor is due, and which ones count.

    `session_binding`: one second factor covers every channel of the session; without it each
    channel asks for its own before it gets a token.
    """

    methods: frozenset[FactorKind] = frozenset()
    """Factors users may enroll and answer with (recovery codes always count)."""
    required_for: frozenset[Channel] = frozenset()
    """Channels whose tokens need a second factor."""
    bypass_roles: frozenset[str] = frozenset()
    """Holders of any of these roles never need one."""
    session_binding: bool = True
    challenge_ttl_s: float = 300.0
    """Life of a pending challenge from its creation; answering or resending never extends it."""
    max_attempts: int = 5
    """Wrong answers a challenge survives, and text messages it may send."""
    sms_code_ttl_s: float = 300.0
    """Life of one texted code."""

    @property
    def enabled(self) -> bool:
        return bool(self.methods) and bool(self.required_for)

    def due(self, roles: Iterable[str], channel: Channel) -> bool:
        """A second factor is needed for `channel` by someone holding `roles`."""
        return self.enabled and channel in self.required_for and self.bypass_roles.isdisjoint(roles)

    def accepts(self, kind: FactorKind) -> bool:
        return kind is FactorKind.RECOVERY or kind in self.methods


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Sessions, channel tokens and step-up."""

    issuer: str = "nexus"
    """The `iss` of channel tokens; tokens of another issuer are refused."""
    session_duration_s: float = 28800.0
    """Life of a session; no token outlives it."""
    access_token_s: float = 900.0
    """Life of a channel token, capped at its session's end."""
    cross_channel_sso: bool = True
    """A session may yield tokens (and step-ups) for channels other than the one it began on."""
    require_reauth_for: frozenset[str] = frozenset()
    """Roles and workflow tags whose calls need a recent authentication."""
    reauth_max_age_s: float = 900.0
    """How recent that authentication must be."""
    cache_s: float = 5.0
    """How long a node trusts a session it read; revocations elsewhere show within this."""


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Failed-login limits. Every lock is temporary; an account lock spares addresses the user
    recently logged in from, so an attacker can slow a user down but never shut them out."""

    window_s: int = 900
    """The span failures are counted over."""
    per_pair: int = 5
    """Failures (wrong passwords or second factors) one account may have from one address."""
    per_account: int = 20
    """Failures one account may have from new addresses."""
    per_address: int = 100
    """Failures one address may have across accounts."""
    lockout_s: int = 900
    """How long a lock lasts once a limit is reached."""
    trusted_address_s: int = 30 * 86400
    """How long a completed login exempts its address from the account lock."""
