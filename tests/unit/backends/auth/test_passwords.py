"""Argon2id password hashing: round trips, refusals that never raise, rehash detection, no leaks."""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher as LibraryHasher
from argon2 import Type
from argon2.exceptions import VerifyMismatchError

from nexus.backends.auth.passwords import (
    DEFAULT_MEMORY_KIB,
    DEFAULT_PARALLELISM,
    DEFAULT_TIME_COST,
    Argon2Hasher,
)
from nexus.errors import ConfigurationError, InvalidInputError

PASSWORD = "correct horse battery staple"


@pytest.fixture
def hasher() -> Argon2Hasher:
    # Cheap parameters keep the suite fast; one test below runs the real defaults.
    return Argon2Hasher(time_cost=1, memory_kib=64, parallelism=1)


def test_a_hash_verifies_its_own_password(hasher: Argon2Hasher) -> None:
    encoded = hasher.hash(PASSWORD)

    assert encoded.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert hasher.verify(encoded, PASSWORD) is True


def test_two_hashes_of_one_password_differ_by_salt(hasher: Argon2Hasher) -> None:
    first, second = hasher.hash(PASSWORD), hasher.hash(PASSWORD)

    assert first != second
    assert hasher.verify(first, PASSWORD)
    assert hasher.verify(second, PASSWORD)


@pytest.mark.parametrize(
    "attempt", ["Correct horse battery staple", "correct horse battery stapl", "", PASSWORD + " "]
)
def test_a_wrong_password_is_refused(hasher: Argon2Hasher, attempt: str) -> None:
    assert hasher.verify(hasher.hash(PASSWORD), attempt) is False


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=64,t=1,p=1$!!!$???",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "pbkdf2_sha256$600000$salt$hash",
        "$argon2id$v=19$m=64,t=1,p=1$ünïcödé$hash",
    ],
)
def test_an_unreadable_hash_is_refused_without_raising(hasher: Argon2Hasher, encoded: str) -> None:
    assert hasher.verify(encoded, PASSWORD) is False
    assert hasher.needs_rehash(encoded) is True


def test_a_hash_of_another_password_under_valid_format_is_refused(hasher: Argon2Hasher) -> None:
    other = hasher.hash("something else entirely")

    assert hasher.verify(other, PASSWORD) is False


def test_changed_parameters_ask_for_a_rehash(hasher: Argon2Hasher) -> None:
    encoded = hasher.hash(PASSWORD)
    stronger = Argon2Hasher(time_cost=2, memory_kib=64, parallelism=1)
    wider = Argon2Hasher(time_cost=1, memory_kib=128, parallelism=1)

    assert hasher.needs_rehash(encoded) is False
    assert stronger.needs_rehash(encoded) is True
    assert wider.needs_rehash(encoded) is True
    # The old hash still verifies under the new parameters, so the login can rehash it.
    assert stronger.verify(encoded, PASSWORD) is True
    assert stronger.needs_rehash(stronger.hash(PASSWORD)) is False


def test_an_argon2i_hash_verifies_but_asks_for_a_rehash_to_argon2id(hasher: Argon2Hasher) -> None:
    legacy = LibraryHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash(PASSWORD)

    assert hasher.verify(legacy, PASSWORD) is True
    assert hasher.needs_rehash(legacy) is True


def test_hashes_made_here_verify_with_the_library_itself(hasher: Argon2Hasher) -> None:
    encoded = hasher.hash(PASSWORD)
    library = LibraryHasher()

    assert library.verify(encoded, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        library.verify(encoded, "wrong")


UNICODE_PASSWORDS = [
    "pässwörd",
    "\u043f\u0430\u0440\u043e\u043b\u044c123",  # Cyrillic, escaped so no letter looks Latin
    "密码🔑🔑",
    "\u00a0spaced\u3000out",
    "ﬁ",
]


@pytest.mark.parametrize("password", UNICODE_PASSWORDS)
def test_unicode_passwords_round_trip(hasher: Argon2Hasher, password: str) -> None:
    encoded = hasher.hash(password)

    assert hasher.verify(encoded, password) is True
    assert hasher.verify(encoded, password[:-1]) is False


def test_composed_and_decomposed_forms_of_one_password_match(hasher: Argon2Hasher) -> None:
    composed = "café-naïve"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed

    assert hasher.verify(hasher.hash(composed), decomposed) is True
    assert hasher.verify(hasher.hash(decomposed), composed) is True


def test_a_password_that_cannot_be_encoded_is_refused_without_echoing_it(hasher: Argon2Hasher) -> None:
    password = "secret\ud800part"

    with pytest.raises(InvalidInputError) as raised:
        hasher.hash(password)

    assert "secret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    assert hasher.verify(hasher.hash("secretpart"), password) is False


def _fastest_of(runs: int, call: Callable[[], object]) -> float:
    # The minimum of several runs is what the work costs, without the scheduler's noise.
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return min(timings)


def test_verify_against_nothing_is_false_and_costs_about_a_verify() -> None:
    hasher = Argon2Hasher(time_cost=3, memory_kib=4096, parallelism=1)
    encoded = hasher.hash(PASSWORD)

    real = _fastest_of(5, lambda: hasher.verify(encoded, "wrong"))
    dummy = _fastest_of(5, lambda: hasher.verify_against_nothing(PASSWORD))
    refusing_garbage = _fastest_of(5, lambda: hasher.verify("garbage", PASSWORD))

    assert hasher.verify_against_nothing(PASSWORD) is False
    assert 0.5 * real < dummy < 2.0 * real
    # The contrast that makes the dummy necessary: an unreadable hash is refused almost at once.
    assert refusing_garbage < 0.2 * real


def test_the_defaults_are_owasp_argon2id_and_round_trip() -> None:
    hasher = Argon2Hasher()
    encoded = hasher.hash(PASSWORD)

    assert (DEFAULT_TIME_COST, DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM) == (2, 19 * 1024, 1)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(encoded, PASSWORD) is True
    assert hasher.verify(encoded, "wrong") is False
    assert hasher.needs_rehash(encoded) is False


@pytest.mark.parametrize(
    ("time_cost", "memory_kib", "parallelism"), [(0, 64, 1), (1, 64, 0), (1, 4, 1), (1, 16, 4)]
)
def test_impossible_parameters_are_a_configuration_error(
    time_cost: int, memory_kib: int, parallelism: int
) -> None:
    with pytest.raises(ConfigurationError):
        Argon2Hasher(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism)


def test_no_password_shows_in_a_repr_a_hash_or_a_log(
    hasher: Argon2Hasher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    encoded = hasher.hash(PASSWORD)
    hasher.verify(encoded, PASSWORD)
    hasher.verify(encoded, "wrong " + PASSWORD)
    hasher.verify("garbage", PASSWORD)
    hasher.verify_against_nothing(PASSWORD)

    assert repr(hasher) == "Argon2Hasher(time_cost=1, memory_kib=64, parallelism=1)"
    assert str(hasher) == repr(hasher)
    assert "horse" not in encoded
    assert "horse" not in caplog.text
