"""Signed channel tokens (pyjwt + cryptography), the `TokenCodec` port of identity.

Asymmetric keys only (EdDSA with Ed25519, ES256 with P-256), picked by `kid`; each key verifies
only its own algorithm. Imports only pyjwt, cryptography, core ports and errors.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from nexus.core.auth.model import SigningKey
from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock
from nexus.errors import AuthenticationError, ConfigurationError

EDDSA: Final = "EdDSA"
ES256: Final = "ES256"
ALGORITHMS: Final = (EDDSA, ES256)
REQUIRED_CLAIMS: Final = ("iss", "aud", "exp", "iat", "nbf", "jti", "sub")
# Our tokens are a few hundred bytes; anything far larger is refused before any parsing.
MAX_TOKEN_CHARS: Final = 8192

EXPIRED: Final = "The token has expired."
NOT_YET_VALID: Final = "The token is not yet valid."
WRONG_AUDIENCE: Final = "The token is for another channel."
WRONG_ISSUER: Final = "The token was issued by another server."
BAD_SIGNATURE: Final = "The token's signature is invalid."
BAD_ALGORITHM: Final = "The token's signing algorithm is not accepted."
MISSING_CLAIM: Final = "The token lacks a required claim."
MALFORMED: Final = "The token is malformed."
UNKNOWN_KEY: Final = "The token was signed by an unknown key."

_SYSTEM_CLOCK: Final = SystemClock()

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class _Verifier:
    algorithm: str
    public_key: PublicKey


@dataclass(frozen=True, slots=True)
class _KeyRing:
    """Everything one encode or decode needs, loaded once and swapped whole on `reload`."""

    signing_kid: str
    signing_algorithm: str
    private_key: PrivateKey
    verifiers: Mapping[str, _Verifier]


def _load_private_key(key: SigningKey) -> PrivateKey:
    try:
        loaded = serialization.load_pem_private_key(key.private_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        loaded = None
    if key.algorithm == EDDSA and isinstance(loaded, ed25519.Ed25519PrivateKey):
        return loaded
    if (
        key.algorithm == ES256
        and isinstance(loaded, ec.EllipticCurvePrivateKey)
        and isinstance(loaded.curve, ec.SECP256R1)
    ):
        return loaded
    raise ConfigurationError(
        f"Signing key {key.kid!r} is not a readable {key.algorithm} private key "
        f"(supported: {', '.join(ALGORITHMS)})."
    )


def _build_ring(keys: Iterable[SigningKey]) -> _KeyRing:
    verifiers: dict[str, _Verifier] = {}
    newest: tuple[SigningKey, PrivateKey] | None = None
    for key in keys:
        if key.kid in verifiers:
            raise ConfigurationError(f"Two signing keys share the kid {key.kid!r}.")
        private_key = _load_private_key(key)
        verifiers[key.kid] = _Verifier(key.algorithm, private_key.public_key())
        if key.retired_at is None and (newest is None or key.created_at > newest[0].created_at):
            newest = (key, private_key)
    if newest is None:
        raise ConfigurationError("Token signing needs at least one signing key that is not retired.")
    return _KeyRing(newest[0].kid, newest[0].algorithm, newest[1], verifiers)


def _reason(error: jwt.PyJWTError) -> str:
    # Order matters: InvalidSignatureError is a DecodeError.
    reasons: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
        (jwt.InvalidSignatureError, BAD_SIGNATURE),
        (jwt.InvalidAlgorithmError, BAD_ALGORITHM),
        (jwt.InvalidAudienceError, WRONG_AUDIENCE),
        (jwt.InvalidIssuerError, WRONG_ISSUER),
        (jwt.MissingRequiredClaimError, MISSING_CLAIM),
        (jwt.ExpiredSignatureError, EXPIRED),
        (jwt.ImmatureSignatureError, NOT_YET_VALID),
    )
    return next((reason for kind, reason in reasons if isinstance(error, kind)), MALFORMED)


def _is_numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class JwtCodec:
    """Sign with the newest active key, verify with any key of the set (rotation keeps old ones).

    `leeway` absorbs clock skew between nodes on `exp`, `nbf` and `iat`; `clock` is the time the
    checks use, so tokens minted with a test clock verify against the same clock.
    """

    def __init__(
        self,
        keys: Iterable[SigningKey],
        *,
        clock: Clock = _SYSTEM_CLOCK,
        leeway: timedelta = timedelta(seconds=5),
    ) -> None:
        if leeway < timedelta(0):
            raise ConfigurationError("Token leeway cannot be negative.")
        self._clock = clock
        self._leeway_s = leeway.total_seconds()
        # Time claims are checked here against `clock`; pyjwt checks signature, aud, iss and types.
        self._jwt = jwt.PyJWT(
            options={
                "require": list(REQUIRED_CLAIMS),
                "strict_aud": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            }
        )
        self._ring = _build_ring(keys)

    def __repr__(self) -> str:
        return f"JwtCodec(signing_kid={self._ring.signing_kid!r}, kids={sorted(self._ring.verifiers)!r})"

    @property
    def signing_kid(self) -> str:
        """The `kid` new tokens are signed with."""
        return self._ring.signing_kid

    def reload(self, keys: Iterable[SigningKey]) -> None:
        """Swap the key set in one step; a bad set raises `ConfigurationError` and changes nothing."""
        self._ring = _build_ring(keys)

    def encode(self, claims: Mapping[str, Any]) -> str:
        """Sign `claims` as given (datetimes in `exp`, `iat`, `nbf` become NumericDates)."""
        ring = self._ring
        return self._jwt.encode(
            dict(claims),
            ring.private_key,
            algorithm=ring.signing_algorithm,
            headers={"kid": ring.signing_kid},
        )

    def decode(self, token: str, *, audience: str, issuer: str) -> Mapping[str, Any]:
        """Verified claims; raises `AuthenticationError` with the reason, never with the token."""
        reason, claims = self._verify(token, audience=audience, issuer=issuer)
        if reason is not None:
            raise AuthenticationError(reason)
        return claims

    def _verify(self, token: str, *, audience: str, issuer: str) -> tuple[str | None, dict[str, Any]]:
        # Returns the refusal instead of raising, so no pyjwt exception (which may quote the token)
        # is chained to ours.
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return MALFORMED, {}
        ring = self._ring
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return MALFORMED, {}
        verifier = ring.verifiers.get(kid) if isinstance(kid, str) else None
        if verifier is None:
            return (MALFORMED if kid is None else UNKNOWN_KEY), {}
        try:
            claims = self._jwt.decode(
                token,
                verifier.public_key,
                algorithms=[verifier.algorithm],
                audience=audience,
                issuer=issuer,
            )
        except jwt.PyJWTError as error:
            return _reason(error), {}
        return self._time_problem(claims), claims

    def _time_problem(self, claims: Mapping[str, Any]) -> str | None:
        times = [claims[name] for name in ("exp", "nbf", "iat")]
        if not all(_is_numeric_date(value) for value in times):
            return MALFORMED
        exp, nbf, iat = times
        now = self._clock.now().timestamp()
        if exp <= now - self._leeway_s:
            return EXPIRED
        if nbf > now + self._leeway_s or iat > now + self._leeway_s:
            return NOT_YET_VALID
        return None


def generate_signing_key(algorithm: str = EDDSA, *, now: datetime) -> SigningKey:
    """A new private key (PKCS#8 PEM) with a random `kid`, created at `now`."""
    private_key: PrivateKey
    if algorithm == EDDSA:
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == ES256:
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ConfigurationError(
            f"Unsupported token algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})."
        )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(
        kid=secrets.token_urlsafe(16), algorithm=algorithm, private_pem=pem.decode("ascii"), created_at=now
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk(key: SigningKey) -> dict[str, str]:
    public_key = _load_private_key(key).public_key()
    common = {"kid": key.kid, "alg": key.algorithm, "use": "sig"}
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), **common}
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
        **common,
    }


def public_jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """The RFC 7517 JWK Set of `keys`: public parts only, with `kid`, `alg` and `use`."""
    return {"keys": [_public_jwk(key) for key in keys]}
