"""Recovery codes: single-use stand-ins for any second factor, shown once and stored hashed."""

from __future__ import annotations

import secrets
import unicodedata
from typing import Final

RECOVERY_ALPHABET: Final = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_GROUPS: Final = 3
RECOVERY_GROUP_LENGTH: Final = 4


def new_recovery_codes(n: int = 10) -> list[str]:
    """`n` single-use recovery codes like `k7mq-x2cv-9dpa`, about 59 bits of entropy each."""
    if n < 1:
        raise ValueError("n must be at least 1")
    length = RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH
    codes: list[str] = []
    while len(codes) < n:
        code = _grouped("".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(length)))
        if code not in codes:
            codes.append(code)
    return codes


def normalize_recovery_code(text: str) -> str | None:
    """The canonical `xxxx-xxxx-xxxx` form of what a user typed, or None if it cannot be a code.

    Case, spaces, hyphens and full-width characters are forgiven; hash this form to compare.
    """
    compact = "".join(
        char for char in unicodedata.normalize("NFKC", text).casefold() if not (char.isspace() or char == "-")
    )
    if len(compact) != RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH or any(
        char not in RECOVERY_ALPHABET for char in compact
    ):
        return None
    return _grouped(compact)


def _grouped(compact: str) -> str:
    size = RECOVERY_GROUP_LENGTH
    return "-".join(compact[start : start + size] for start in range(0, len(compact), size))
