"""The stores and protocol adapters identity works with, handed to the service as one value.

Imports only the auth ports and the throttle, so the service and its second-factor desk can share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nexus.core.auth.ports import (
    Directory,
    EphemeralStore,
    FactorStore,
    HardwareKeyVerifier,
    OtpVerifier,
    PasswordHasher,
    SessionSeats,
    SessionStore,
    SmsSender,
    SsoProtocol,
    TokenCodec,
    UserStore,
)
from nexus.core.auth.throttle import LoginThrottle


@dataclass(frozen=True, slots=True)
class IdentityParts:
    """The stores and protocol adapters the service works with."""

    users: UserStore
    factors: FactorStore
    sessions: SessionStore
    ephemeral: EphemeralStore
    hasher: PasswordHasher
    tokens: TokenCodec
    throttle: LoginThrottle
    directory: Directory | None = None
    sso: Mapping[str, SsoProtocol] = field(default_factory=dict)
    otp: OtpVerifier | None = None
    hardware: HardwareKeyVerifier | None = None
    sms: SmsSender | None = None
    seats: SessionSeats | None = None
    """Live-session quotas (a tenant's `cli_sessions`); None: sessions are not counted."""
    tenant_admission: Callable[[str], None] | None = None
    """Refuses a session about to open in a suspended (or deleted) tenant; None without tenancy."""
