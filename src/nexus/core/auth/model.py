"""The values of identity: users, their second factors, sessions and login challenges.

Pure data; imports only the standard library and core types. Secrets (hashes, TOTP seeds, public
keys) are kept out of `repr`, so a record printed in a log line carries none of them.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from nexus.core.types import Channel

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class FactorKind(enum.StrEnum):
    """Second factors. `RECOVERY` codes stand in for any of them, once each."""

    TOTP = "totp"
    SMS = "sms"
    HARDWARE_KEY = "hardware_key"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who a directory or an SSO provider vouched for.

    `source` is "ldap", "oidc" or "saml"; `subject` is stable within that source (LDAP DN, OIDC
    `sub`, SAML NameID). `roles` are already mapped from groups; `attributes` are the claims or
    directory attributes the provider exposes (ABAC reads them).
    """

    source: str
    subject: str
    username: str
    roles: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class User:
    """A person who can log in. Local users carry a password hash; external ones none."""

    user_id: str
    username: str
    source: str
    roles: frozenset[str]
    created_at: datetime
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    password_hash: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    disabled: bool = False
    tenants: frozenset[str] = frozenset()
    """The tenants this user may log in to; empty: the platform's routes only."""


@dataclass(frozen=True, slots=True)
class Factor:
    """One enrolled second factor of one user.

    `secret` holds what verification needs: the TOTP seed, the SMS phone number, the WebAuthn
    public key (base64url COSE) or a recovery code's hash. `last_step` is the newest TOTP time step
    accepted (a code is never accepted twice); `sign_count` the WebAuthn counter.
    """

    factor_id: str
    user_id: str
    kind: FactorKind
    secret: str = field(repr=False)
    created_at: datetime
    active: bool = False
    label: str = ""
    credential_id: str | None = None
    sign_count: int = 0
    last_step: int = -1
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A server-side login. Channel tokens derive from it and die with it.

    `auth_time` is the last time the user proved who they are (first factor, and the second when
    one was due): step-up compares against it. `mfa_channels` lists the channels the second factor
    was satisfied for; with session-bound MFA it is every channel at once.
    """

    session_id: str
    user_id: str
    username: str
    method: str
    roles: frozenset[str]
    created_at: datetime
    expires_at: datetime
    auth_time: datetime
    origin_channel: Channel
    secret_hash: str = field(repr=False)
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    mfa_time: datetime | None = None
    mfa_channels: frozenset[Channel] = frozenset()
    revoked_at: datetime | None = None
    tenant_id: str | None = None
    """The tenant logged in to (its route at login); with session isolation, valid there only."""
    tenants: frozenset[str] = frozenset()
    """The user's tenants captured at login; a membership change ends the user's sessions."""

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A token signing key; retired keys still verify until their last token has expired."""

    kid: str
    algorithm: str
    private_pem: str = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None


def mask_phone(phone: str) -> str:
    """The number with all but its last two digits starred (none shown for short numbers)."""
    digits = [char for char in phone if char.isdigit()]
    shown = 2 if len(digits) >= 7 else 0
    prefix = "+" if phone.startswith("+") else ""
    return prefix + "*" * (len(digits) - shown) + "".join(digits[len(digits) - shown :])


def username_key(username: str) -> str:
    """The form usernames are unique and looked up in: NFKC-normalized and case-folded."""
    return unicodedata.normalize("NFKC", username).casefold()
