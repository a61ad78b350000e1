"""TOTP verification at fixed times, provisioning URIs, and recovery codes."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest

from nexus.backends.auth.totp import TotpVerifier
from nexus.core.auth.recovery import RECOVERY_ALPHABET, new_recovery_codes, normalize_recovery_code

# RFC 6238 appendix B: the ASCII seed "12345678901234567890" for SHA-1, in base32.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
AT = datetime(2025, 3, 1, 9, 30, 10, tzinfo=UTC)
STEP = int(AT.timestamp()) // 30


@pytest.fixture
def verifier() -> TotpVerifier:
    return TotpVerifier()


def code_for_step(step: int, secret: str = SECRET) -> str:
    """What an authenticator app computes for that step (pyotp standing in for the phone)."""
    return pyotp.TOTP(secret).at(step * 30)


@pytest.mark.parametrize(
    ("unix_time", "code", "step"),
    [(59, "287082", 1), (1111111109, "081804", 37037036), (1234567890, "005924", 41152263)],
)
def test_rfc_6238_vectors_match_their_step(
    verifier: TotpVerifier, unix_time: int, code: str, step: int
) -> None:
    # The RFC gives 8-digit values; authenticator apps show their last 6 digits.
    at = datetime.fromtimestamp(unix_time, tz=UTC)

    assert verifier.match(RFC_SECRET, code, at) == step
    assert verifier.code_at(RFC_SECRET, at) == code


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_of_the_current_and_adjacent_steps_are_accepted_with_their_step(
    verifier: TotpVerifier, offset: int
) -> None:
    assert verifier.match(SECRET, code_for_step(STEP + offset), AT) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_codes_two_or_more_steps_away_are_refused(verifier: TotpVerifier, offset: int) -> None:
    code = code_for_step(STEP + offset)
    assert code not in {code_for_step(STEP + near) for near in (-1, 0, 1)}

    assert verifier.match(SECRET, code, AT) is None


def test_the_window_moves_with_time(verifier: TotpVerifier) -> None:
    code = code_for_step(STEP)

    assert verifier.match(SECRET, code, AT + timedelta(seconds=30)) == STEP
    assert verifier.match(SECRET, code, AT + timedelta(seconds=60)) is None
    assert verifier.match(SECRET, code, AT - timedelta(seconds=30)) == STEP
    assert verifier.match(SECRET, code, AT - timedelta(seconds=60)) is None


def test_the_step_is_the_same_in_any_timezone(verifier: TotpVerifier) -> None:
    elsewhere = AT.astimezone(timezone(timedelta(hours=-7)))

    assert verifier.match(SECRET, code_for_step(STEP), elsewhere) == STEP


def test_a_code_of_another_secret_is_refused(verifier: TotpVerifier) -> None:
    other = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"
    code = code_for_step(STEP, other)
    assert code not in {code_for_step(STEP + near) for near in (-1, 0, 1)}

    assert verifier.match(SECRET, code, AT) is None


def test_a_wrong_code_is_refused(verifier: TotpVerifier) -> None:
    valid = {code_for_step(STEP + near) for near in (-1, 0, 1)}
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)

    assert verifier.match(SECRET, wrong, AT) is None


@pytest.mark.parametrize("shape", ["short", "long", "empty", "letters", "inner space", "sign"])
def test_codes_of_the_wrong_shape_are_refused(verifier: TotpVerifier, shape: str) -> None:
    code = code_for_step(STEP)
    malformed = {
        "short": code[:5],
        "long": code + "0",
        "empty": "",
        "letters": code[:3] + "a" + code[4:],
        "inner space": code[:3] + " " + code[3:],
        "sign": "+" + code[1:],
    }[shape]

    assert verifier.match(SECRET, malformed, AT) is None


def test_digits_outside_ascii_are_refused(verifier: TotpVerifier) -> None:
    code = code_for_step(STEP)
    arabic_indic = "".join(chr(0x0660 + int(digit)) for digit in code)
    fullwidth = "".join(chr(0xFF10 + int(digit)) for digit in code)

    assert verifier.match(SECRET, arabic_indic, AT) is None
    assert verifier.match(SECRET, fullwidth, AT) is None


def test_surrounding_whitespace_is_forgiven(verifier: TotpVerifier) -> None:
    assert verifier.match(SECRET, f" {code_for_step(STEP)}\n", AT) == STEP


def test_matching_is_stateless_so_replay_is_the_callers_to_refuse(verifier: TotpVerifier) -> None:
    code = code_for_step(STEP)

    assert verifier.match(SECRET, code, AT) == verifier.match(SECRET, code, AT) == STEP


def test_a_naive_time_is_refused(verifier: TotpVerifier) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.match(SECRET, code_for_step(STEP), AT.replace(tzinfo=None))


def test_a_new_secret_is_160_random_bits_of_base32(verifier: TotpVerifier) -> None:
    secrets = {verifier.new_secret() for _ in range(20)}

    assert len(secrets) == 20
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20
        # A secret made here works with any other TOTP implementation.
        assert verifier.match(secret, pyotp.TOTP(secret).at(AT), AT) == STEP


def test_the_provisioning_uri_names_issuer_account_and_secret(verifier: TotpVerifier) -> None:
    uri = verifier.provisioning_uri(SECRET, "alice@example.com", "Nexus Corp")

    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    assert unquote(parsed.path) == "/Nexus Corp:alice@example.com"
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["Nexus Corp"]
    # Authenticator apps default to SHA-1, 6 digits and 30 s, which is what match() checks.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    scanned = pyotp.parse_uri(uri)
    assert isinstance(scanned, pyotp.TOTP)
    assert verifier.match(SECRET, scanned.at(AT), AT) == STEP


def test_recovery_codes_are_distinct_grouped_and_unambiguous() -> None:
    codes = new_recovery_codes()

    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", code)
        assert not set(code) & set("01ilo")
        assert normalize_recovery_code(code) == code
    assert not set(RECOVERY_ALPHABET) & set("01ilo")


def test_recovery_codes_do_not_repeat_across_sets() -> None:
    seen = [code for _ in range(20) for code in new_recovery_codes(5)]

    assert len(seen) == len(set(seen)) == 100
    # Every letter of the alphabet shows up: the codes are drawn from all of it.
    assert set("".join(seen).replace("-", "")) == set(RECOVERY_ALPHABET)


def test_asking_for_no_recovery_codes_is_an_error() -> None:
    assert len(new_recovery_codes(1)) == 1
    with pytest.raises(ValueError, match="at least 1"):
        new_recovery_codes(0)


def fullwidth(text: str) -> str:
    """The same text as typed with an East Asian input method (U+FF01..U+FF5E)."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


@pytest.mark.parametrize(
    "typed",
    [
        "k7mq-x2cv-9dpa",
        "K7MQ-X2CV-9DPA",
        "k7mqx2cv9dpa",
        " k7mq x2cv 9dpa ",
        "k7mq--x2cv-9dpa",
        fullwidth("k7mq-x2cv-9dpa"),
    ],
)
def test_a_recovery_code_is_normalized_from_how_people_type_it(typed: str) -> None:
    assert normalize_recovery_code(typed) == "k7mq-x2cv-9dpa"


@pytest.mark.parametrize(
    "typed", ["", "k7mq-x2cv", "k7mq-x2cv-9dpaa", "k0mq-x2cv-9dpa", "k7mq-x2cv-9dp1", "k7mq_x2cv_9dpa"]
)
def test_text_that_cannot_be_a_recovery_code_normalizes_to_none(typed: str) -> None:
    assert normalize_recovery_code(typed) is None
