"""The ports of identity: what the login flows need from storage and from protocol libraries.

Implementations live in `nexus.backends` (argon2, pyjwt, pyotp, webauthn, ldap3, authlib,
pysaml2, SQL and Redis stores). Core decides; these only store, hash, sign and speak protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from nexus.core.auth.model import ExternalIdentity, Factor, Session, SigningKey, User
from nexus.core.types import Channel


class PasswordHasher(Protocol):
    """Slow, salted password hashing. Every method is CPU-bound: call it off the event loop."""

    def hash(self, password: str) -> str: ...

    def verify(self, encoded: str, password: str) -> bool:
        """True on a match; False on a mismatch or an unreadable hash. Never raises for those."""
        ...

    def needs_rehash(self, encoded: str) -> bool:
        """The hash was made with other parameters than the current ones."""
        ...

    def verify_against_nothing(self, password: str) -> bool:
        """Spend what a verify costs and return False, for logins of unknown users (no enumeration
        by timing)."""
        ...


class Directory(Protocol):
    """An LDAP directory: search for the user, bind as them, read their groups."""

    async def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The identity on success, None for wrong credentials or an unknown user (indistinguishable).

        Raises `DependencyUnavailableError` when the directory cannot be reached.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SsoRedirect:
    """Where to send the browser to start a single sign-on, and the state that ties it together."""

    url: str
    state: str


class SsoProtocol(Protocol):
    """One SSO protocol as a relying party / service provider ("oidc" or "saml")."""

    name: str

    async def begin(self, *, return_to: str) -> SsoRedirect:
        """Start a login; the pending state (PKCE verifier, nonce, request id) is kept server-side."""
        ...

    async def complete(self, params: Mapping[str, str]) -> tuple[ExternalIdentity, str]:
        """Finish a login from the callback's query or form fields.

        Returns the identity and the `return_to` given to `begin`. Raises `AuthenticationError`
        (with a reason safe to show) for anything forged, tampered, replayed, expired or unknown.
        """
        ...

    def metadata(self) -> str | None:
        """The service-provider metadata document, where the protocol has one (SAML)."""
        ...


class EphemeralStore(Protocol):
    """Short-lived values shared by every node: login challenges, SSO state, replay markers.

    Memory on one node, Redis across a cluster. Values are strings; keys are namespaced by callers.
    """

    async def put(self, key: str, value: str, ttl_s: float) -> None: ...

    async def get(self, key: str) -> str | None: ...

    async def take(self, key: str) -> str | None:
        """Get and delete in one atomic step: of two concurrent takers, only one gets the value."""
        ...

    async def claim(self, key: str, ttl_s: float) -> bool:
        """Mark `key` used for `ttl_s`; False when it already was (replay detection)."""
        ...

    async def close(self) -> None: ...


class TokenCodec(Protocol):
    """Signs and verifies channel access tokens (JWTs with an asymmetric algorithm and a `kid`)."""

    def encode(self, claims: Mapping[str, Any]) -> str: ...

    def decode(self, token: str, *, audience: str, issuer: str) -> Mapping[str, Any]:
        """Verified claims; raises `AuthenticationError` naming the reason (expired, wrong audience...)."""
        ...


class SmsSender(Protocol):
    """Delivers a text message. A real provider plugs in by implementing this."""

    async def send(self, phone: str, message: str) -> None: ...


class UserStore(Protocol):
    async def add(self, user: User) -> None:
        """Raises `ConfigurationError` when the username is taken."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def find(self, username: str) -> User | None: ...

    async def list(self) -> Sequence[User]: ...

    async def update(self, user: User) -> None: ...

    async def delete(self, user_id: str) -> bool: ...


class FactorStore(Protocol):
    async def add(self, factor: Factor) -> None: ...

    async def for_user(self, user_id: str) -> Sequence[Factor]: ...

    async def activate(self, factor_id: str) -> bool: ...

    async def advance_step(self, factor_id: str, step: int) -> bool:
        """Record TOTP step `step` as used, atomically; False when it (or a later one) already was."""
        ...

    async def advance_sign_count(self, factor_id: str, sign_count: int) -> bool:
        """Store a WebAuthn counter only if it grew (a clone shows an old one); False otherwise."""
        ...

    async def use_once(self, factor_id: str, at: datetime) -> bool:
        """Mark a recovery code used, atomically; False when it already was."""
        ...

    async def remove(self, factor_id: str) -> bool: ...


class SessionStore(Protocol):
    async def create(self, session: Session) -> None: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def reauthenticated(
        self,
        session_id: str,
        *,
        auth_time: datetime,
        mfa_time: datetime | None,
        mfa_channels: frozenset[Channel],
    ) -> bool: ...

    async def revoke(self, session_id: str, at: datetime) -> bool: ...

    async def revoke_user(self, user_id: str, at: datetime) -> int:
        """Revoke every live session of a user; how many there were."""
        ...

    async def close(self) -> None: ...


class SessionSeats(Protocol):
    """Counts live sessions against a limit (a tenant's `cli_sessions`); the implementation says
    which sessions count. A seat is held from login, kept while the session is used, and given
    back at logout; one idle past the seat's lifetime frees it and takes it again on next use."""

    async def take(self, session: Session) -> None:
        """Hold a seat for a new session; `QuotaExceededError` when none is free."""
        ...

    async def keep(self, session: Session, channel: Channel) -> None:
        """The session is in use on `channel`: keep its seat (take one if it has none)."""
        ...

    async def release(self, session: Session) -> None: ...


class SigningKeyStore(Protocol):
    async def list(self) -> Sequence[SigningKey]: ...

    async def add(self, key: SigningKey) -> None: ...

    async def retire(self, kid: str, at: datetime) -> bool: ...


class OtpVerifier(Protocol):
    """Time-based one-time passwords (RFC 6238)."""

    def new_secret(self) -> str: ...

    def provisioning_uri(self, secret: str, account: str, issuer: str) -> str: ...

    def match(self, secret: str, code: str, at: datetime) -> int | None:
        """The time step `code` belongs to (within the accepted window), or None."""
        ...


class KeyCredential(Protocol):
    """A registered hardware key, as the verifier reports it."""

    @property
    def credential_id(self) -> str: ...

    @property
    def public_key(self) -> str: ...

    @property
    def sign_count(self) -> int: ...


class HardwareKeyVerifier(Protocol):
    """WebAuthn ceremonies; options are JSON-ready documents, challenges stay server-side."""

    def registration_options(
        self, user_id: str, username: str, existing_credential_ids: Sequence[str]
    ) -> tuple[dict[str, Any], str]: ...

    def verify_registration(self, response: Mapping[str, Any] | str, challenge: str) -> KeyCredential: ...

    def authentication_options(self, credential_ids: Sequence[str]) -> tuple[dict[str, Any], str]: ...

    def verify_authentication(
        self, response: Mapping[str, Any] | str, challenge: str, *, public_key: str, sign_count: int
    ) -> int:
        """The authenticator's new signature counter; raises `AuthenticationError` when it fails."""
        ...
