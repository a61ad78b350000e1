"""Argon2id password hashing (argon2-cffi), the `PasswordHasher` port of identity.

Every method is CPU-bound by design: callers run them off the event loop. Imports only argon2,
the standard library and errors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import secrets
import sys
import unicodedata
from typing import Final

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError

from nexus.errors import ConfigurationError, InvalidInputError

# OWASP's second argon2id configuration (RFC 9106 lists argon2id with these as a valid choice):
# 19 MiB, two passes, one lane. About 20 ms on one core.
DEFAULT_TIME_COST: Final = 2
DEFAULT_MEMORY_KIB: Final = 19 * 1024
DEFAULT_PARALLELISM: Final = 1


# glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so after
# the first hash every argon2 block comes from the heap of the thread that hashed, and stays
# there: measured, four concurrent logins kept 60 MiB. A fixed threshold keeps such blocks mapped
# and returned to the system on free (glibc's default behaviour before that adjustment).
_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD_BYTES: Final = 1024 * 1024


def _keep_large_blocks_mapped() -> None:
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:  # glibc; other C libraries have no such knob
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


_keep_large_blocks_mapped()


def _normalize(password: str) -> str:
    # NIST SP 800-63B: normalize so the same password typed on another keyboard or OS still matches.
    return unicodedata.normalize("NFKC", password)


def _is_encodable(text: str) -> bool:
    # Lone surrogates survive JSON decoding but have no UTF-8 form. Checked up front so that no
    # UnicodeEncodeError (which holds the whole password) is chained to the error we raise.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Argon2Hasher:
    """Hash and verify passwords with argon2id; `needs_rehash` flags hashes made with other parameters.

    Passwords are NFKC-normalized before hashing, so composed and decomposed forms match.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_kib: int = DEFAULT_MEMORY_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        if time_cost < 1 or parallelism < 1 or memory_kib < 8 * parallelism:
            raise ConfigurationError(
                "Argon2 needs time_cost >= 1, parallelism >= 1 and memory_kib >= 8 * parallelism."
            )
        self._argon2 = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # Verifying a random password against this costs what a real verify costs (same parameters).
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(16))

    def __repr__(self) -> str:
        parameters = self._argon2
        return (
            f"Argon2Hasher(time_cost={parameters.time_cost}, memory_kib={parameters.memory_cost}, "
            f"parallelism={parameters.parallelism})"
        )

    def hash(self, password: str) -> str:
        """Hash `password` with a fresh random salt; the result is the PHC string `$argon2id$...`."""
        normalized = _normalize(password)
        if not _is_encodable(normalized):
            raise InvalidInputError("The password contains characters that cannot be encoded.")
        return self._argon2.hash(normalized)

    def verify(self, encoded: str, password: str) -> bool:
        """True on a match; False on a mismatch, an unreadable or non-argon2 hash. Never raises for those."""
        try:
            return self._argon2.verify(encoded, _normalize(password))
        except (VerificationError, InvalidHashError, ValueError, TypeError):
            # ValueError covers text that is not ASCII (hash) or not encodable (lone surrogates).
            return False

    def needs_rehash(self, encoded: str) -> bool:
        """True when `encoded` was made with other parameters or type, or cannot be read at all."""
        try:
            return self._argon2.check_needs_rehash(encoded)
        except (InvalidHashError, ValueError, TypeError):
            return True

    def verify_against_nothing(self, password: str) -> bool:
        """Spend a verify's time on a password with no user behind it, and return False.

        Call it for unknown usernames (and users without a local password), so that the answer's
        timing does not tell an attacker which usernames exist.
        """
        self.verify(self._dummy_hash, password)
        return False
