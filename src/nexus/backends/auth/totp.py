"""Time-based one-time passwords (pyotp) and recovery codes, for the TOTP second factor.

Verification says which time step a code matched; the caller stores it to refuse replays.
Imports only pyotp and the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Final

import pyotp

DIGITS: Final = 6
STEP_SECONDS: Final = 30
# One step either side absorbs phone clock drift and the time it takes to type the code.
WINDOW_STEPS: Final = 1

# No 0/o, 1/l/i: a code read off paper or a screen is typed back without guessing.


class TotpVerifier:
    """RFC 6238 TOTP as authenticator apps expect it: SHA-1, 6 digits, 30-second steps.

    `match` returns the time step (counter) a code belongs to, or None. It does not prevent replay
    by itself: the caller records the step with `FactorStore.advance_step(factor_id, step)` and
    refuses the code when that returns False, so each step's code is accepted at most once.
    """

    def new_secret(self) -> str:
        """A fresh random base32 seed of 160 bits (RFC 4226's recommended length)."""
        return pyotp.random_base32(32)

    def provisioning_uri(self, secret: str, account: str, issuer: str) -> str:
        """The `otpauth://totp/...` URI an authenticator app scans from a QR code."""
        return self._totp(secret).provisioning_uri(name=account, issuer_name=issuer)

    def match(self, secret: str, code: str, at: datetime) -> int | None:
        """The time step `code` is valid for at `at` (within one step either side), or None.

        Refuses anything but exactly six ASCII digits. Every candidate is compared in constant time.
        Raises `ValueError` for a naive `at` or a secret that is not base32 of at least 112 bits.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("TOTP verification needs a timezone-aware time")
        candidate = code.strip()
        if len(candidate) != DIGITS or not (candidate.isascii() and candidate.isdigit()):
            return None
        totp = self._totp(secret)
        current = totp.timecode(at)
        matched: int | None = None
        # No early exit: each step costs the same whether or not an earlier one matched.
        for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
            if step >= 0 and hmac.compare_digest(totp.generate_otp(step), candidate):
                matched = step
        return matched

    def code_at(self, secret: str, at: datetime) -> str:
        """The code an authenticator shows at `at` (for enrollment checks and tests)."""
        return self._totp(secret).at(at)

    @staticmethod
    def _totp(secret: str) -> pyotp.TOTP:
        return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS)
