"""A whole `IdentityService` on memory stores, real crypto and a fake clock, for the identity unit suites.

Every adapter is the real one (argon2, pyjwt, pyotp, webauthn with a software key); only time is
fake, so expiry, step-up age and TOTP windows move by `clock.advance`, never by sleeping.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from nexus.backends.auth.passwords import Argon2Hasher
from nexus.backends.auth.sms import MessageSink
from nexus.backends.auth.tokens import JwtCodec, generate_signing_key
from nexus.backends.auth.totp import TotpVerifier
from nexus.backends.auth.webauthn import WebAuthnSettings, WebAuthnVerifier
from nexus.backends.counters import MemoryCounterStore
from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.backends.memory import MemoryFactorStore, MemorySessionStore, MemoryUserStore
from nexus.core.auth.model import ExternalIdentity, FactorKind, User
from nexus.core.auth.policy import MfaPolicy, SessionPolicy, ThrottlePolicy
from nexus.core.auth.ports import SsoProtocol, SsoRedirect
from nexus.core.auth.service import Grant, IdentityParts, IdentityService
from nexus.core.auth.throttle import LoginThrottle
from nexus.core.types import Channel
from nexus.errors import AuthenticationError, MfaEnrollmentRequiredError, MfaRequiredError, NexusError
from nexus.testing.clock import FakeClock
from nexus.testing.webauthn import SoftAuthenticator

PASSWORD = "correct horse battery staple"
ADDRESS = "198.51.100.7"  # a documentation address: only ever a throttle key here
ORIGIN = "https://nexus.example"
RP_ID = "nexus.example"
PHONE = "+15551234567"
EVERY_FACTOR = frozenset({FactorKind.TOTP, FactorKind.SMS, FactorKind.HARDWARE_KEY})
EVERY_CHANNEL = frozenset(Channel)
TOTP_STEP_S = 30


def fast_hasher(time_cost: int = 1) -> Argon2Hasher:
    """Real argon2id with parameters cheap enough for a unit test."""
    return Argon2Hasher(time_cost=time_cost, memory_kib=1024)


def mfa_everywhere(**changes: Any) -> MfaPolicy:
    """Every factor accepted, a second factor due on every channel."""
    return MfaPolicy(methods=EVERY_FACTOR, required_for=EVERY_CHANNEL, **changes)


def challenge_of(error: NexusError) -> str:
    challenge_id = error.detail["challenge_id"]
    assert isinstance(challenge_id, str)
    return challenge_id


@dataclass
class IdentityRig:
    """The service and everything behind it, so tests can drive time and read what was stored."""

    clock: FakeClock
    users: MemoryUserStore
    factors: MemoryFactorStore
    sessions: MemorySessionStore
    ephemeral: MemoryEphemeralStore
    counters: MemoryCounterStore
    sink: MessageSink
    codec: JwtCodec
    hasher: Argon2Hasher
    throttle: LoginThrottle
    otp: TotpVerifier
    hardware: WebAuthnVerifier
    sso: Mapping[str, SsoProtocol]
    mfa: MfaPolicy
    policy: SessionPolicy
    service: IdentityService = field(init=False)

    def __post_init__(self) -> None:
        self.service = self.service_with()

    def service_with(
        self,
        *,
        hasher: Argon2Hasher | None = None,
        mfa: MfaPolicy | None = None,
        sessions: SessionPolicy | None = None,
    ) -> IdentityService:
        """Another service over the same stores (as a second node, or after a settings change)."""
        parts = IdentityParts(
            users=self.users,
            factors=self.factors,
            sessions=self.sessions,
            ephemeral=self.ephemeral,
            hasher=hasher or self.hasher,
            tokens=self.codec,
            throttle=self.throttle,
            sso=self.sso,
            otp=self.otp,
            hardware=self.hardware,
            sms=self.sink,
        )
        return IdentityService(parts, self.clock, mfa=mfa or self.mfa, sessions=sessions or self.policy)

    # -- users and logins ------------------------------------------------------------------------

    async def add_user(
        self, username: str = "alice", *, roles: Iterable[str] = (), password: str = PASSWORD
    ) -> User:
        return await self.service.create_user(username, password, roles=roles)

    async def stored_user(self, username: str = "alice") -> User:
        user = await self.users.find(username)
        assert user is not None, username
        return user

    async def login(
        self,
        username: str = "alice",
        password: str = PASSWORD,
        channel: Channel = Channel.API,
        address: str = ADDRESS,
        tenant_id: str | None = None,
    ) -> Grant:
        return await self.service.login(username, password, channel, address, tenant_id=tenant_id)

    async def mfa_challenge(
        self, username: str = "alice", channel: Channel = Channel.API, address: str = ADDRESS
    ) -> str:
        """Log in with the password and return the second-factor challenge that asks for more."""
        with pytest.raises(MfaRequiredError) as raised:
            await self.login(username, channel=channel, address=address)
        return challenge_of(raised.value)

    async def enrollment_challenge(
        self, username: str = "alice", channel: Channel = Channel.API, tenant_id: str | None = None
    ) -> str:
        with pytest.raises(MfaEnrollmentRequiredError) as raised:
            await self.login(username, channel=channel, tenant_id=tenant_id)
        return challenge_of(raised.value)

    # -- second factors --------------------------------------------------------------------------

    def totp_code(self, secret: str, *, steps: int = 0) -> str:
        """The code an authenticator app shows now (or `steps` time steps away), computed by pyotp."""
        at = self.clock.now() + timedelta(seconds=TOTP_STEP_S * steps)
        return pyotp.TOTP(secret).at(at)

    def next_step(self) -> None:
        """Move to the next TOTP time step, so a fresh code exists."""
        self.clock.advance(TOTP_STEP_S)

    async def enroll_totp(
        self, username: str = "alice", tenant_id: str | None = None
    ) -> tuple[str, list[str]]:
        """Enroll and activate TOTP during a login (on `tenant_id`'s route); the seed and the
        recovery codes handed out."""
        challenge_id = await self.enrollment_challenge(username, tenant_id=tenant_id)
        enrollment = await self.service.enroll(challenge_id, "totp")
        secret = str(enrollment.details["secret"])
        _, codes = await self.service.activate(challenge_id, self.totp_code(secret), tenant_id=tenant_id)
        self.next_step()
        return secret, codes

    async def enroll_sms(self, username: str = "alice", phone: str = PHONE) -> list[str]:
        challenge_id = await self.enrollment_challenge(username)
        await self.service.enroll(challenge_id, "sms", phone=phone)
        code = self.sink.last_code(phone)
        assert code is not None
        _, codes = await self.service.activate(challenge_id, code)
        return codes

    async def enroll_key(self, key: SoftAuthenticator, username: str = "alice") -> list[str]:
        """Register a hardware key as a browser would: options, `create()`, then activation."""
        challenge_id = await self.enrollment_challenge(username)
        enrollment = await self.service.enroll(challenge_id, "hardware_key")
        response = key.create(enrollment.details["options"], ORIGIN)
        _, codes = await self.service.activate(challenge_id, response)
        return codes

    async def answer_with_key(self, challenge_id: str, key: SoftAuthenticator) -> Grant:
        options = await self.service.hardware_key_options(challenge_id)
        return await self.service.answer(challenge_id, "hardware_key", key.get(options, ORIGIN))


class ScriptedSso:
    """A stand-in identity provider that vouches for whoever the test says, once per state.

    Only the service's linking and state rules are under test with it; the real OIDC and SAML
    protocols are tested against real providers in the integration suites.
    """

    def __init__(self, identity: ExternalIdentity) -> None:
        self.name = identity.source
        self.next_identity = identity
        self._pending: dict[str, tuple[ExternalIdentity, str]] = {}

    async def begin(self, *, return_to: str) -> SsoRedirect:
        state = secrets.token_urlsafe(16)
        self._pending[state] = (self.next_identity, return_to)
        return SsoRedirect(url=f"https://idp.example/authorize?state={state}", state=state)

    async def complete(self, params: Mapping[str, str]) -> tuple[ExternalIdentity, str]:
        pending = self._pending.pop(params.get("state", ""), None)
        if pending is None:
            raise AuthenticationError("The sign-on state is unknown or used.")
        return pending

    def metadata(self) -> str | None:
        return None


def build_rig(
    *,
    mfa: MfaPolicy | None = None,
    sessions: SessionPolicy | None = None,
    throttle: ThrottlePolicy | None = None,
    sso: Mapping[str, SsoProtocol] | None = None,
) -> IdentityRig:
    clock = FakeClock()
    ephemeral = MemoryEphemeralStore(monotonic=clock.monotonic)
    counters = MemoryCounterStore()
    return IdentityRig(
        clock=clock,
        users=MemoryUserStore(),
        factors=MemoryFactorStore(),
        sessions=MemorySessionStore(clock=clock.now),
        ephemeral=ephemeral,
        counters=counters,
        sink=MessageSink(clock=clock),
        codec=JwtCodec([generate_signing_key(now=clock.now())], clock=clock),
        hasher=fast_hasher(),
        throttle=LoginThrottle(counters, ephemeral, clock, throttle or ThrottlePolicy()),
        otp=TotpVerifier(),
        hardware=WebAuthnVerifier(WebAuthnSettings(rp_id=RP_ID, rp_name="Nexus", origins=(ORIGIN,))),
        sso=dict(sso or {}),
        mfa=mfa or MfaPolicy(),
        policy=sessions or SessionPolicy(),
    )
