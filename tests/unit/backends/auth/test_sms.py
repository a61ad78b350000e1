"""The development SMS sink: what it keeps, what it finds, and what it never logs."""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from nexus.backends.auth.sms import MessageSink, mask_phone, new_sms_code
from nexus.testing.clock import FakeClock

ALICE = "+15551234567"
BOB = "+447700900123"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sink(clock: FakeClock) -> MessageSink:
    return MessageSink(clock=clock)


async def test_messages_are_kept_per_phone_oldest_first(sink: MessageSink, clock: FakeClock) -> None:
    await sink.send(ALICE, "first")
    clock.advance(10)
    await sink.send(BOB, "for bob")
    await sink.send(ALICE, "second")

    assert sink.messages_to(ALICE) == ["first", "second"]
    assert sink.messages_to(BOB) == ["for bob"]
    assert sink.messages_to("+10000000000") == []
    assert [(sent.phone, sent.sent_at) for sent in sink.messages] == [
        (ALICE, T0),
        (BOB, T0.replace(second=10)),
        (ALICE, T0.replace(second=10)),
    ]


async def test_last_code_reads_the_newest_message_to_that_phone(sink: MessageSink) -> None:
    await sink.send(ALICE, "Your Nexus code is 012345. It expires in 5 minutes.")
    await sink.send(BOB, "Your Nexus code is 999999.")
    await sink.send(ALICE, "Your Nexus code is 654321. It expires in 5 minutes.")

    assert sink.last_code(ALICE) == "654321"
    assert sink.last_code(BOB) == "999999"


async def test_last_code_is_none_without_a_six_digit_code(sink: MessageSink) -> None:
    assert sink.last_code(ALICE) is None

    await sink.send(ALICE, "Welcome to Nexus, ticket 1234567, room 12345.")
    assert sink.last_code(ALICE) is None

    await sink.send(ALICE, "Code \u0661\u0662\u0663\u0664\u0665\u0666 in Arabic-Indic digits")
    assert sink.last_code(ALICE) is None


async def test_only_the_newest_messages_are_kept(clock: FakeClock) -> None:
    sink = MessageSink(max_messages=3, clock=clock)

    for number in range(5):
        await sink.send(ALICE, f"message {number}")

    assert sink.messages_to(ALICE) == ["message 2", "message 3", "message 4"]


def test_the_bound_must_hold_a_message() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        MessageSink(max_messages=0)


async def test_logs_and_reprs_carry_neither_the_number_nor_the_message(
    sink: MessageSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus.backends.auth.sms")

    await sink.send(ALICE, "Your Nexus code is 482913.")

    assert "+*********67" in caplog.text
    assert ALICE not in caplog.text
    assert "1234567" not in caplog.text
    assert "482913" not in caplog.text
    assert "Your Nexus code" not in caplog.text
    shown = repr(sink) + repr(sink.messages)
    assert ALICE not in shown
    assert "482913" not in shown


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+15551234567", "+*********67"),
        ("+44 7700 900123", "+**********23"),
        ("0612345678", "********78"),
        ("12345", "*****"),
        ("", ""),
    ],
)
def test_a_masked_number_shows_at_most_its_last_two_digits(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_sms_codes_are_six_random_digits() -> None:
    codes = [new_sms_code() for _ in range(2000)]

    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)
    assert len(set(codes)) > 1990
    # Each position draws every digit: no fixed or biased place (2000 draws, ~200 each expected).
    for position in range(6):
        counts = Counter(code[position] for code in codes)
        assert set(counts) == set("0123456789")
        assert min(counts.values()) > 100
