"""The audit hash chain: one encoding whatever form a stored time takes, and a verifier that names
the first record at fault and why."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nexus.backends.memory import MemoryAuditSink
from nexus.core.audit_chain import (
    GENESIS_HASH,
    ChainLink,
    ChainState,
    ChainVerifier,
    extend,
    link_hash,
    purgeable,
    time_text,
)
from nexus.core.types import Action, AuditRecord, Channel, Outcome

T0 = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def values(n: int, *, when: datetime = T0, reason: str = "allowed") -> tuple[object, ...]:
    return (
        when,
        f"r{n}",
        "api",
        "key:alice",
        "report",
        "execute",
        "success",
        None,
        12.5,
        "127.0.0.1",
        reason,
        None,
    )


def chain(
    count: int, *, anchor: int = 0, anchor_hash: str = GENESIS_HASH
) -> tuple[ChainState, list[ChainLink]]:
    batch = [values(n, when=T0 + timedelta(seconds=n)) for n in range(anchor + 1, anchor + count + 1)]
    links = [
        ChainLink(seq, prev, digest, row)
        for (seq, prev, digest), row in zip(extend(anchor, anchor_hash, batch), batch, strict=True)
    ]
    tail_seq, tail_hash = (links[-1].seq, links[-1].hash or "") if links else (anchor, anchor_hash)
    return ChainState(anchor, anchor_hash, tail_seq, tail_hash), links


def verify(state: ChainState, links: list[ChainLink]) -> ChainVerifier:
    verifier = ChainVerifier(state)
    for link in links:
        if not verifier.feed(link):
            break
    return verifier


def test_the_hash_is_sha256_of_the_documented_json_encoding() -> None:
    expected_json = json.dumps(
        [1, GENESIS_HASH, "2025-03-01T12:00:00.250000", "r1", "api", "key:alice", "report", "execute",
         "success", None, "12.5", "127.0.0.1", "allowed", None],
        separators=(",", ":"),
    )  # fmt: skip

    assert link_hash(1, GENESIS_HASH, values(1)) == hashlib.sha256(expected_json.encode()).hexdigest()


def test_a_time_hashes_the_same_as_an_aware_datetime_in_any_offset_or_as_sqlite_text() -> None:
    eastern = T0.astimezone(timezone(timedelta(hours=-5)))

    assert time_text(T0) == time_text(eastern) == time_text("2025-03-01 12:00:00.250000")
    assert time_text(T0.replace(microsecond=0)) == "2025-03-01T12:00:00.000000"


def test_a_whole_number_duration_hashes_as_the_float_a_database_gives_back() -> None:
    as_int = (*values(1)[:8], 12, *values(1)[9:])
    as_float = (*values(1)[:8], 12.0, *values(1)[9:])

    assert link_hash(1, GENESIS_HASH, as_int) == link_hash(1, GENESIS_HASH, as_float)


def test_text_that_no_encoding_accepts_still_hashes() -> None:
    assert len(link_hash(1, GENESIS_HASH, values(1, reason="bad\udc80"))) == 64


def test_every_field_the_sequence_number_and_the_previous_hash_change_the_hash() -> None:
    base = link_hash(1, GENESIS_HASH, values(1))
    changed = {
        link_hash(2, GENESIS_HASH, values(1)),
        link_hash(1, "f" * 64, values(1)),
        link_hash(1, GENESIS_HASH, values(1, reason="allowed ")),
        link_hash(1, GENESIS_HASH, values(1, when=T0 + timedelta(microseconds=1))),
    }
    # None and the empty string are different values.
    error_code_empty = (*values(1)[:7], "", *values(1)[8:])
    changed.add(link_hash(1, GENESIS_HASH, error_code_empty))

    assert base not in changed
    assert len(changed) == 5


def test_extend_links_each_record_to_the_one_before_it() -> None:
    links = extend(7, "a" * 64, [values(1), values(2), values(3)])

    assert [seq for seq, _, _ in links] == [8, 9, 10]
    assert links[0][1] == "a" * 64
    assert links[1][1] == links[0][2]
    assert links[2][1] == links[1][2]
    assert links[2][2] == link_hash(10, links[1][2], values(3))


def test_an_untouched_chain_is_intact_and_says_what_it_covered() -> None:
    state, links = chain(5)

    result = verify(state, links).finish()

    assert result.intact
    assert (result.checked, result.first_seq, result.last_seq, result.unchained) == (5, 1, 5, 0)
    assert result.head_hash == links[-1].hash
    assert (result.broken_seq, result.reason) == (None, None)


def test_an_empty_chain_is_intact() -> None:
    result = ChainVerifier(ChainState()).finish()

    assert result.intact
    assert (result.checked, result.first_seq, result.last_seq) == (0, 1, 0)


def test_an_altered_field_breaks_the_chain_at_that_record() -> None:
    state, links = chain(5)
    links[2] = replace(links[2], values=values(3, when=links[2].values[0], reason="forged"))

    result = verify(state, links).finish()

    assert not result.intact
    assert result.broken_seq == 3
    assert result.reason is not None
    assert "altered" in result.reason
    assert result.checked == 2


def test_a_missing_middle_record_is_named() -> None:
    state, links = chain(5)
    del links[2]

    result = verify(state, links).finish()

    assert (result.intact, result.broken_seq) == (False, 3)
    assert result.reason == "record 3 is missing"


def test_two_records_swapped_break_the_chain_at_the_first_of_them() -> None:
    state, links = chain(5)
    second, third = links[1], links[2]
    links[1] = replace(third, seq=2)
    links[2] = replace(second, seq=3)

    result = verify(state, links).finish()

    assert (result.intact, result.broken_seq) == (False, 2)
    assert result.reason is not None
    assert "prev_hash" in result.reason


def test_records_missing_at_the_end_are_found_from_the_recorded_tail() -> None:
    state, links = chain(5)

    result = verify(state, links[:3]).finish()

    assert (result.intact, result.broken_seq) == (False, 4)
    assert result.reason == "records 4 to 5 are missing"


def test_a_record_past_the_recorded_tail_is_found() -> None:
    state, links = chain(5)
    shorter = replace(state, tail_seq=4, tail_hash=links[3].hash or "")

    result = verify(shorter, links).finish()

    assert (result.intact, result.broken_seq) == (False, 5)


def test_a_rewritten_tail_hash_is_found() -> None:
    state, links = chain(3)

    result = verify(replace(state, tail_hash="e" * 64), links).finish()

    assert (result.intact, result.broken_seq) == (False, 3)


def test_verification_starts_after_the_purge_anchor() -> None:
    full_state, links = chain(6)
    anchor = links[2]
    state = replace(full_state, anchor_seq=anchor.seq, anchor_hash=anchor.hash or "")

    result = verify(state, links[3:]).finish()
    leftover = verify(state, links[2:]).finish()

    assert result.intact
    assert (result.checked, result.first_seq, result.last_seq) == (3, 4, 6)
    assert (leftover.intact, leftover.broken_seq) == (False, 3)


def test_a_wrong_anchor_hash_breaks_the_first_record_after_it() -> None:
    full_state, links = chain(4)
    state = replace(full_state, anchor_seq=2, anchor_hash="b" * 64)

    result = verify(state, links[2:]).finish()

    assert (result.intact, result.broken_seq) == (False, 3)
    assert result.reason is not None
    assert "purge anchor" in result.reason


@pytest.mark.parametrize("record_id", [-1, 0, 41])
def test_a_record_without_a_sequence_number_breaks_the_chain_whatever_its_id(record_id: int) -> None:
    state, links = chain(2)

    result = verify(state, links).finish(unchained=1, first_unchained_id=record_id)

    assert not result.intact
    assert (result.broken_seq, result.unchained) == (None, 1)
    assert result.reason == f"a record outside the chain (id {record_id})"


def test_several_records_outside_the_chain_are_counted_from_the_lowest_id() -> None:
    state, links = chain(2)

    result = verify(state, links).finish(unchained=3, first_unchained_id=7)

    assert (result.intact, result.unchained) == (False, 3)
    assert result.reason == "a record outside the chain (id 7) and 2 more"


@pytest.mark.parametrize(("cutoff_s", "expected"), [(0, 0), (3, 2), (10, 5)])
def test_purgeable_counts_the_leading_records_older_than_the_cutoff(cutoff_s: int, expected: int) -> None:
    _, links = chain(5)  # stamped T0 + 1 s ... T0 + 5 s

    assert purgeable(links, T0 + timedelta(seconds=cutoff_s)) == expected


def test_purgeable_stops_at_the_first_younger_record_even_when_older_ones_follow() -> None:
    _, links = chain(4)
    links[1] = replace(links[1], values=values(2, when=T0 + timedelta(days=1)))

    assert purgeable(links, T0 + timedelta(hours=1)) == 1


async def test_the_memory_sink_dropping_its_oldest_records_keeps_the_chain_verifiable() -> None:
    sink = MemoryAuditSink(max_records=3)
    for n in range(5):
        await sink.record(
            AuditRecord(
                T0, f"r{n}", Channel.MCP, "key:alice", "report", Action.READ, Outcome.SUCCESS, None, 1.0
            )
        )

    result = await sink.verify()

    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq) == (3, 3, 5)
