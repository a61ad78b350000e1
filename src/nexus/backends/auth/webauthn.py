"""Hardware-key second factor: WebAuthn ceremonies as a relying party, on the `webauthn` package.

Builds the options a browser passes to `navigator.credentials.create()` / `.get()` and verifies what
comes back. Pure CPU and cheap (one signature check), so it may run on the event loop. Stores
nothing: challenges, credentials and counters are kept by the caller. Imports no web framework.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from nexus.errors import AuthenticationError, ConfigurationError, InvalidInputError

UserVerification = Literal["preferred", "required", "discouraged"]

_USER_VERIFICATIONS: Final = ("preferred", "required", "discouraged")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_RESPONSE_CHARS: Final = 64 * 1024
_MAX_USER_HANDLE_BYTES: Final = 64  # WebAuthn caps user.id at 64 bytes
_MIN_CHALLENGE_BYTES: Final = 16  # the spec asks for at least 16 random bytes

# Reasons a response is refused, safe to show a caller and to audit. The library's messages carry
# the origins and counters it compared, so they are mapped to these and never passed on.
REASON_MALFORMED: Final = "malformed_response"
REASON_WRONG_CEREMONY: Final = "wrong_ceremony"
REASON_WRONG_CHALLENGE: Final = "wrong_challenge"
REASON_WRONG_ORIGIN: Final = "wrong_origin"
REASON_WRONG_RP_ID: Final = "wrong_rp_id"
REASON_USER_NOT_PRESENT: Final = "user_not_present"
REASON_USER_NOT_VERIFIED: Final = "user_not_verified"
REASON_COUNTER_NOT_INCREASED: Final = "counter_not_increased"
REASON_BAD_SIGNATURE: Final = "bad_signature"
REASON_UNSUPPORTED_KEY: Final = "unsupported_key"
REASON_ATTESTATION: Final = "attestation_refused"

# First match wins, on the lower-cased library message; anything unmatched is "malformed".
_REASON_BY_PHRASE: Final = (
    ("malformed", REASON_MALFORMED),
    ("client data type", REASON_WRONG_CEREMONY),
    ("challenge", REASON_WRONG_CHALLENGE),
    ("origin", REASON_WRONG_ORIGIN),
    ("rp id", REASON_WRONG_RP_ID),
    ("user verification", REASON_USER_NOT_VERIFIED),
    ("user presence", REASON_USER_NOT_PRESENT),
    ("not present", REASON_USER_NOT_PRESENT),
    ("sign count", REASON_COUNTER_NOT_INCREASED),
    ("signature", REASON_BAD_SIGNATURE),
    ("public key alg", REASON_UNSUPPORTED_KEY),
    ("attestation", REASON_ATTESTATION),
    ("unsupported", REASON_UNSUPPORTED_KEY),
)


@dataclass(frozen=True, slots=True)
class WebAuthnSettings:
    """Who the relying party is and what it asks of authenticators."""

    rp_id: str
    """Relying party id: the registrable domain the keys are bound to (no scheme, no port)."""
    rp_name: str
    """Name an authenticator may show the user."""
    origins: tuple[str, ...]
    """Page origins allowed to run the ceremonies (`https://host[:port]`; `http://localhost` too)."""
    user_verification: UserVerification = "preferred"
    """Whether the key must verify the user (PIN, biometric) besides their presence."""
    timeout_ms: int = 60_000
    """How long the browser gives the user to touch the key."""

    def __post_init__(self) -> None:
        # A single origin given as a string would otherwise be split into characters.
        origins = (self.origins,) if isinstance(self.origins, str) else tuple(self.origins)
        object.__setattr__(self, "origins", origins)
        _check_rp_id(self.rp_id)
        if not self.rp_name.strip():
            raise ConfigurationError("webauthn rp_name must not be empty")
        if not origins:
            raise ConfigurationError("webauthn needs at least one origin")
        for origin in origins:
            _check_origin(origin, self.rp_id)
        if self.user_verification not in _USER_VERIFICATIONS:
            raise ConfigurationError(
                f"webauthn user_verification must be one of {', '.join(_USER_VERIFICATIONS)}"
            )
        if isinstance(self.timeout_ms, bool) or not 1_000 <= self.timeout_ms <= 600_000:
            raise ConfigurationError("webauthn timeout_ms must be between 1000 and 600000")


def _check_rp_id(rp_id: str) -> None:
    labels = rp_id.split(".")
    if rp_id != rp_id.lower() or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigurationError("webauthn rp_id must be a lower-case domain name such as 'example.com'")
    if labels[-1].isdigit():
        raise ConfigurationError("webauthn rp_id must be a domain name, not an IP address")


def _check_origin(origin: str, rp_id: str) -> None:
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError as exc:
        raise ConfigurationError(f"webauthn origin {origin!r} is not a URL") from exc
    host = parts.hostname or ""
    if parts.path or parts.query or parts.fragment or parts.username or origin.endswith("/"):
        raise ConfigurationError(f"webauthn origin {origin!r} must be scheme://host[:port] only")
    if not (parts.scheme == "https" or (parts.scheme == "http" and host == "localhost")):
        raise ConfigurationError(f"webauthn origin {origin!r} must use https (http only for localhost)")
    if host != rp_id and not host.endswith("." + rp_id):
        raise ConfigurationError(f"webauthn origin {origin!r} is not within rp_id {rp_id!r}")


@dataclass(frozen=True, slots=True)
class RegisteredCredential:
    """A key that passed registration: what to store to verify its assertions later."""

    credential_id: str
    """Base64url credential id; the caller finds the factor by it at authentication."""
    public_key: str = field(repr=False)
    """Base64url COSE public key."""
    sign_count: int
    """The key's signature counter at registration (0 for keys without one)."""
    transports: tuple[str, ...] = ()
    """How the browser reached the key (usb, nfc, ble, internal, hybrid), as reported."""
    user_verified: bool = False
    """The key verified the user (PIN, biometric) during registration."""


class WebAuthnVerifier:
    """Build WebAuthn options and verify the browser's answers for one relying party."""

    def __init__(self, settings: WebAuthnSettings) -> None:
        self._settings = settings
        self._user_verification = UserVerificationRequirement(settings.user_verification)
        self._require_uv = settings.user_verification == "required"

    @property
    def settings(self) -> WebAuthnSettings:
        return self._settings

    def registration_options(
        self, user_id: str, username: str, existing_credential_ids: Sequence[str]
    ) -> tuple[dict[str, Any], str]:
        """Return creation options (JSON-ready) and their challenge (base64url) to keep server-side.

        Keys the user already registered are excluded, so one key cannot be enrolled twice.
        """
        user_handle = user_id.encode()
        if not user_handle or len(user_handle) > _MAX_USER_HANDLE_BYTES:
            raise InvalidInputError("user id must be 1 to 64 bytes for a hardware key")
        options = generate_registration_options(
            rp_id=self._settings.rp_id,
            rp_name=self._settings.rp_name,
            user_name=username,
            user_id=user_handle,
            timeout=self._settings.timeout_ms,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=self._user_verification,
            ),
            exclude_credentials=_descriptors(existing_credential_ids),
        )
        return options_to_json_dict(options), bytes_to_base64url(options.challenge)

    def authentication_options(self, credential_ids: Sequence[str]) -> tuple[dict[str, Any], str]:
        """Return request options (JSON-ready) allowing the given keys, and the challenge to keep."""
        options = generate_authentication_options(
            rp_id=self._settings.rp_id,
            timeout=self._settings.timeout_ms,
            allow_credentials=_descriptors(credential_ids),
            user_verification=self._user_verification,
        )
        return options_to_json_dict(options), bytes_to_base64url(options.challenge)

    def verify_registration(self, response: Mapping[str, Any] | str, challenge: str) -> RegisteredCredential:
        """Check a `create()` answer against the challenge issued for it.

        Raises:
            AuthenticationError: the response is malformed, answers another challenge, origin or
                relying party, lacks a required user verification, or uses an unsupported key.
        """
        credential = _credential_json(response, "registration")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=_challenge_bytes(challenge, "registration"),
                expected_rp_id=self._settings.rp_id,
                expected_origin=list(self._settings.origins),
                require_user_verification=self._require_uv,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise _refusal("registration", exc) from exc
        return RegisteredCredential(
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            transports=_transports(credential),
            user_verified=verified.user_verified,
        )

    def verify_authentication(
        self, response: Mapping[str, Any] | str, challenge: str, *, public_key: str, sign_count: int
    ) -> int:
        """Check a `get()` answer with the stored key and counter; return the new counter to store.

        The caller picks `public_key` and `sign_count` by `credential_id_of(response)` and refuses
        ids it does not know. A counter that did not grow, when either is non-zero, is refused: it
        is the sign of a cloned key.

        Raises:
            AuthenticationError: malformed, wrong challenge, origin or relying party, user not
                present or (when required) not verified, stale counter, or a bad signature.
        """
        credential = _credential_json(response, "authentication")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=_challenge_bytes(challenge, "authentication"),
                expected_rp_id=self._settings.rp_id,
                expected_origin=list(self._settings.origins),
                credential_public_key=base64url_to_bytes(public_key),
                credential_current_sign_count=sign_count,
                require_user_verification=self._require_uv,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise _refusal("authentication", exc) from exc
        return verified.new_sign_count


def credential_id_of(response: Mapping[str, Any] | str) -> str:
    """Return the base64url credential id a response claims, to look up the stored key.

    Raises:
        AuthenticationError: the response carries no usable id.
    """
    credential = _credential_json(response, "authentication")
    credential_id = credential.get("id")
    if not isinstance(credential_id, str) or not credential_id or credential.get("rawId") != credential_id:
        raise _refused("authentication", REASON_MALFORMED)
    return credential_id


def _descriptors(credential_ids: Sequence[str]) -> list[PublicKeyCredentialDescriptor]:
    try:
        return [PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid)) for cid in credential_ids]
    except ValueError as exc:
        raise InvalidInputError("a stored hardware key id is not base64url") from exc


def _challenge_bytes(challenge: str, ceremony: str) -> bytes:
    try:
        raw = base64url_to_bytes(challenge)
    except ValueError:
        raw = b""
    if len(raw) < _MIN_CHALLENGE_BYTES:
        # An empty or short expected challenge would make a forged or old response easier to pass.
        raise _refused(ceremony, REASON_WRONG_CHALLENGE)
    return raw


def _credential_json(response: Mapping[str, Any] | str, ceremony: str) -> dict[str, Any]:
    if isinstance(response, str):
        if len(response) > _MAX_RESPONSE_CHARS:
            raise _refused(ceremony, REASON_MALFORMED)
        try:
            response = json.loads(response)
        except ValueError as exc:
            raise _refused(ceremony, REASON_MALFORMED) from exc
    if not isinstance(response, Mapping):
        raise _refused(ceremony, REASON_MALFORMED)
    # The library accepts only plain dicts, down to the nested `response` member.
    return {key: dict(value) if isinstance(value, Mapping) else value for key, value in response.items()}


def _transports(credential: Mapping[str, Any]) -> tuple[str, ...]:
    reported = (
        credential["response"].get("transports") if isinstance(credential.get("response"), dict) else None
    )
    if not isinstance(reported, list):
        return ()
    known = {transport.value for transport in AuthenticatorTransport}
    return tuple(sorted({value for value in reported if value in known}))


def _reason(exc: Exception) -> str:
    message = str(exc).lower()
    for phrase, reason in _REASON_BY_PHRASE:
        if phrase in message:
            return reason
    return REASON_MALFORMED


def _refusal(ceremony: str, exc: Exception) -> AuthenticationError:
    return _refused(ceremony, _reason(exc))


def _refused(ceremony: str, reason: str) -> AuthenticationError:
    return AuthenticationError(f"hardware key {ceremony} refused: {reason.replace('_', ' ')}", reason=reason)
