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
    required_for: frozenset[Channel] = frozenset()
    bypass_roles: frozenset[str] = frozenset()
    session_binding: bool = True
    challenge_ttl_s: float = 300.0
    max_attempts: int = 5
    sms_code_ttl_s: float = 300.0

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
    session_duration_s: float = 28800.0
    access_token_s: float = 900.0
    cross_channel_sso: bool = True
    require_reauth_for: frozenset[str] = frozenset()
    reauth_max_age_s: float = 900.0
    cache_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Failed-login limits. Every lock is temporary; an account lock spares addresses the user
    recently logged in from, so an attacker can slow a user down but never shut them out."""

    window_s: int = 900
    per_pair: int = 5
    per_account: int = 20
    per_address: int = 100
    lockout_s: int = 900
    trusted_address_s: int = 30 * 86400
