"""A software FIDO2 authenticator for tests: it answers WebAuthn options like a browser and a key would.

Each credential is an ES256 (P-256) key made on `create()`; `get()` signs assertions with it and
bumps its counter. It is deliberately obedient: it signs for whatever relying party, origin and
challenge it is handed, so tests can present what a phishing page or a cloned key would send.
Built on cryptography and cbor2 only, independent of the verifying library.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

_ES256: Final = -7
_FLAG_UP: Final = 0x01
_FLAG_UV: Final = 0x04
_FLAG_AT: Final = 0x40
_AAGUID_NONE: Final = bytes(16)


class AuthenticatorError(Exception):
    """The authenticator refused, as a real one would (excluded key, no matching key, no ES256)."""


def encode_base64url(data: bytes) -> str:
    """Encode bytes as unpadded base64url, the WebAuthn JSON encoding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64url(text: str) -> bytes:
    """Decode unpadded (or padded) base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class _Credential:
    rp_id: str
    user_handle: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    sign_count: int = 0


class SoftAuthenticator:
    """A roaming security key in memory, holding one ES256 key per credential it creates.

    Args:
        user_verification: the key can verify its user (PIN, biometric); it sets the UV flag when
            options ask for "required" or "preferred" verification.
        counter_step: how much the signature counter grows per assertion; 0 models keys
            without a counter (always 0).
        transports: what `create()` reports in `response.transports`.
    """

    def __init__(
        self,
        *,
        user_verification: bool = True,
        counter_step: int = 1,
        transports: tuple[str, ...] = ("usb",),
    ) -> None:
        if counter_step < 0:
            raise ValueError("counter_step must not be negative")
        self.user_verification = user_verification
        self.counter_step = counter_step
        self.transports = transports
        self._credentials: dict[str, _Credential] = {}

    @property
    def credential_ids(self) -> tuple[str, ...]:
        """Base64url ids of the credentials this key holds, oldest first."""
        return tuple(self._credentials)

    def sign_count(self, credential_id: str) -> int:
        """The counter the next assertion will exceed."""
        return self._credential(credential_id).sign_count

    def set_sign_count(self, credential_id: str, value: int) -> None:
        """Set a credential's counter, as a key restored from an old backup would have it."""
        if not 0 <= value < 2**32:
            raise ValueError("a sign count is an unsigned 32-bit number")
        self._credential(credential_id).sign_count = value

    def clone(self) -> SoftAuthenticator:
        """Return a copy with the same keys and today's counters; it falls behind as this one is used."""
        twin = SoftAuthenticator(
            user_verification=self.user_verification,
            counter_step=self.counter_step,
            transports=self.transports,
        )
        twin._credentials = {cid: copy.copy(credential) for cid, credential in self._credentials.items()}
        return twin

    def create(self, options: Mapping[str, Any], origin: str) -> dict[str, Any]:
        """Answer `navigator.credentials.create()` options with a RegistrationResponseJSON dict.

        The attestation is "none"; authenticator data carries UP (and UV when asked and able),
        a zero AAGUID, the new credential id and its COSE public key.
        """
        rp_id = _rp_id_of_creation(options, origin)
        algorithms = {param.get("alg") for param in options.get("pubKeyCredParams", [])}
        if _ES256 not in algorithms:
            raise AuthenticatorError("the relying party does not accept ES256 keys")
        excluded = {str(item["id"]) for item in options.get("excludeCredentials") or []}
        if excluded & self._credentials.keys():
            raise AuthenticatorError("this key is already registered with the relying party")

        raw_id = secrets.token_bytes(32)
        credential_id = encode_base64url(raw_id)
        private_key = ec.generate_private_key(ec.SECP256R1())
        self._credentials[credential_id] = _Credential(
            rp_id=rp_id, user_handle=str(options["user"]["id"]), private_key=private_key
        )

        flags = _FLAG_UP | _FLAG_AT | self._uv_flag(options.get("authenticatorSelection") or {})
        attested = _AAGUID_NONE + len(raw_id).to_bytes(2, "big") + raw_id + _cose_key(private_key)
        auth_data = _authenticator_data(rp_id, flags, 0) + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = _client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": encode_base64url(client_data),
                "attestationObject": encode_base64url(attestation),
                "transports": list(self.transports),
            },
        }

    def get(self, options: Mapping[str, Any], origin: str) -> dict[str, Any]:
        """Answer `navigator.credentials.get()` options with an AuthenticationResponseJSON dict.

        Uses the first allowed credential it holds (any for the rp id when none are listed), bumps
        its counter by `counter_step` and signs authenticatorData || SHA-256(clientDataJSON).
        """
        rp_id = str(options["rpId"])
        credential_id = self._pick(options, rp_id)
        credential = self._credentials[credential_id]
        credential.sign_count = (credential.sign_count + self.counter_step) % 2**32

        auth_data = _authenticator_data(rp_id, _FLAG_UP | self._uv_flag(options), credential.sign_count)
        client_data = _client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = credential.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": encode_base64url(client_data),
                "authenticatorData": encode_base64url(auth_data),
                "signature": encode_base64url(signature),
                "userHandle": credential.user_handle,
            },
        }

    def _pick(self, options: Mapping[str, Any], rp_id: str) -> str:
        allowed = [str(item["id"]) for item in options.get("allowCredentials") or []]
        if allowed:
            held = [cid for cid in allowed if cid in self._credentials]
        else:
            held = [cid for cid, credential in self._credentials.items() if credential.rp_id == rp_id]
        if not held:
            raise AuthenticatorError("this key holds none of the requested credentials")
        return held[0]

    def _credential(self, credential_id: str) -> _Credential:
        try:
            return self._credentials[credential_id]
        except KeyError:
            raise AuthenticatorError("this key holds no such credential") from None

    def _uv_flag(self, selection: Mapping[str, Any]) -> int:
        wanted = selection.get("userVerification", "preferred") in ("required", "preferred")
        return _FLAG_UV if wanted and self.user_verification else 0


def _rp_id_of_creation(options: Mapping[str, Any], origin: str) -> str:
    # Without rp.id, a browser uses the origin's host, as WebAuthn specifies.
    rp_id = options["rp"].get("id") or urlsplit(origin).hostname
    if not rp_id:
        raise AuthenticatorError("no relying party id in the options or the origin")
    return str(rp_id)


def _authenticator_data(rp_id: str, flags: int, sign_count: int) -> bytes:
    rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
    return rp_id_hash + bytes([flags]) + sign_count.to_bytes(4, "big")


def _client_data(ceremony: str, challenge: str, origin: str) -> bytes:
    document = {"type": ceremony, "challenge": challenge, "origin": origin, "crossOrigin": False}
    return json.dumps(document, separators=(",", ":")).encode()


def _cose_key(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = private_key.public_key().public_numbers()
    # COSE_Key (RFC 9053): kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
    return cbor2.dumps(
        {1: 2, 3: _ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
    )
