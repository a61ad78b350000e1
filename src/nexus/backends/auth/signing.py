"""The token signing keys of a running app: stored ones, an optional key file, rotation and refresh.

On first start, with no key file and no active stored key, one key is generated and stored, so
every node on the same state store signs and verifies with the same keys. Rotation adds a key
and retires the others; retired keys keep verifying until the last token they signed has expired.
Nodes pick up keys rotated elsewhere at their next refresh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from nexus.backends.auth.tokens import EDDSA, ES256, JwtCodec, generate_signing_key, public_jwks
from nexus.core.auth.model import SigningKey
from nexus.core.auth.ports import SigningKeyStore
from nexus.core.ports import Clock
from nexus.errors import ConfigurationError, NexusError

_log = logging.getLogger(__name__)


def load_key_file(path: str, clock: Clock) -> SigningKey:
    """An Ed25519 or P-256 private key from a PEM file; its `kid` is a hash of its public key."""
    try:
        data = Path(path).read_bytes()
        private_key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"app.auth.signing_key_file {path!r} is not a readable unencrypted PEM private key."
        ) from exc
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = EDDSA
    elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        algorithm = ES256
    else:
        raise ConfigurationError("app.auth.signing_key_file must hold an Ed25519 or P-256 (ES256) key.")
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = base64.urlsafe_b64encode(hashlib.sha256(public).digest()[:16]).rstrip(b"=").decode()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return SigningKey(kid=f"file-{kid}", algorithm=algorithm, private_pem=pem, created_at=clock.now())


class SigningKeys:
    """Loads the key ring into a `JwtCodec` and keeps it current."""

    def __init__(
        self,
        store: SigningKeyStore,
        clock: Clock,
        *,
        key_file: str | None,
        verify_retired_for: timedelta,
        leeway: timedelta,
    ) -> None:
        self._store = store
        self._clock = clock
        self._file_key = load_key_file(key_file, clock) if key_file else None
        self._verify_retired_for = verify_retired_for
        self._leeway = leeway
        self._keys: list[SigningKey] = []
        self.codec: JwtCodec | None = None

    async def open(self) -> JwtCodec:
        """The codec, from the stored keys (one generated first when there is none to sign with)."""
        stored = list(await self._store.list())
        if self._file_key is None and not any(key.retired_at is None for key in stored):
            await self._store.add(generate_signing_key(now=self._clock.now()))
            stored = list(await self._store.list())
        self._keys = self._ring(stored)
        self.codec = JwtCodec(self._keys, clock=self._clock, leeway=self._leeway)
        return self.codec

    def jwks(self) -> dict[str, Any]:
        """The public keys tokens may be verified with (RFC 7517)."""
        return public_jwks(self._keys)

    async def refresh(self) -> None:
        """Reload the stored keys (a rotation made by another process or node)."""
        keys = self._ring(await self._store.list())
        if self.codec is not None and [k.kid for k in keys] != [k.kid for k in self._keys]:
            self.codec.reload(keys)
            self._keys = keys
            _log.info("token signing keys reloaded: %d key(s)", len(keys))

    async def rotate(self, algorithm: str = EDDSA) -> SigningKey:
        """Sign with a new key from now on; the others verify until their tokens have expired."""
        fresh = generate_signing_key(algorithm, now=self._clock.now())
        await self._store.add(fresh)
        for key in await self._store.list():
            if key.kid != fresh.kid and key.retired_at is None:
                await self._store.retire(key.kid, self._clock.now())
        await self.refresh()
        return fresh

    async def keep_fresh(self, interval_s: float) -> None:
        """Refresh every `interval_s` until cancelled; a store that does not answer is retried."""
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(NexusError):
                await self.refresh()

    def _ring(self, stored: Sequence[SigningKey]) -> list[SigningKey]:
        now = self._clock.now()
        keep = [
            key
            for key in stored
            if key.retired_at is None or now - key.retired_at < self._verify_retired_for + self._leeway
        ]
        if self._file_key is not None:
            # The file's key signs; stored ones only verify what they signed before it was set.
            keep = [k if k.retired_at is not None else _verify_only(k, now) for k in keep]
            keep.append(self._file_key)
        return sorted(keep, key=lambda key: (key.created_at, key.kid))


def _verify_only(key: SigningKey, now: datetime) -> SigningKey:
    return replace(key, retired_at=now)
