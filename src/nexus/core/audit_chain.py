"""The audit trail's hash chain: how a stored record is hashed, and how a chain is verified.

Each stored record carries a sequence number, the hash of the record before it and its own hash:
SHA-256 over a canonical encoding of its fields, its sequence number and that previous hash. The
audit writers (never the request path) build the links; `ChainVerifier` walks them. Imports only
the standard library, so the SQLite appender process can use it too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from nexus.core.types import AuditRecord

GENESIS_HASH: Final = "0" * 64
"""The "previous hash" of the first record of a chain."""

FIELDS: Final = (
    "time",
    "request_id",
    "channel",
    "principal_id",
    "workflow",
    "action",
    "outcome",
    "error_code",
    "duration_ms",
    "client_addr",
    "reason",
    "tenant_id",
)
"""The record's fields in the order they are hashed (and stored)."""

_TIME, _DURATION = FIELDS.index("time"), FIELDS.index("duration_ms")
# `json.dumps(..., separators=(",", ":"))` with its encoder built once, not on every call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def time_text(value: datetime | str) -> str:
    """A record time as the chain hashes it: UTC, ISO 8601 without offset, in microseconds.

    A string is SQLite's stored form of a UTC time (what the appender process has in hand).
    """
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds")


def link_hash(seq: int, prev_hash: str, values: Sequence[object]) -> str:
    """The hash of the record at `seq` after `prev_hash`; `values` in `FIELDS` order.

    The encoding is `json.dumps([seq, prev_hash, *fields], separators=(",", ":"))` (ASCII, so no
    text can fail to encode), with the time as `time_text` and `duration_ms` as `repr(float(x))`.
    """
    when, duration = values[_TIME], values[_DURATION]
    if not isinstance(when, datetime | str) or not isinstance(duration, int | float):
        raise TypeError("an audit record's time must be a datetime and its duration_ms a number")
    fields = list(values)
    fields[_TIME], fields[_DURATION] = time_text(when), repr(float(duration))
    encoded = _ENCODE([seq, prev_hash, *fields])
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def extend(tail_seq: int, tail_hash: str, batch: Iterable[Sequence[object]]) -> list[tuple[int, str, str]]:
    """(seq, prev_hash, hash) for each record of `batch` (values in `FIELDS` order), in order,
    appended after the chain's newest link."""
    links = []
    seq, prev = tail_seq, tail_hash
    for values in batch:
        seq += 1
        digest = link_hash(seq, prev, values)
        links.append((seq, prev, digest))
        prev = digest
    return links


@dataclass(frozen=True, slots=True)
class ChainLink:
    """A stored, chained record as the verifier reads it."""

    seq: int
    prev_hash: str | None
    hash: str | None
    values: Sequence[object]
    """The record's fields in `FIELDS` order (time as a datetime)."""


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where a store's chain stands: the anchor it starts after and its newest link."""

    anchor_seq: int = 0
    """Records up to this sequence number were purged (0: none ever were)."""
    anchor_hash: str = GENESIS_HASH
    """The hash of the last purged record; the next record's `prev_hash`."""
    tail_seq: int = 0
    """The newest record's sequence number (0: none written yet)."""
    tail_hash: str = GENESIS_HASH


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What `verify` found: intact or not, how much it checked, and where a break is."""

    intact: bool
    checked: int
    """Chained records whose hash was recomputed."""
    first_seq: int
    """The sequence number verification starts at (after the anchor of purged records)."""
    last_seq: int
    """The chain's newest sequence number (`first_seq - 1` when it holds no record)."""
    head_hash: str
    """The newest record's hash (the anchor's when none is left): note it down elsewhere to
    detect a rewrite of the whole chain later."""
    unchained: int = 0
    """Records outside the chain (no sequence number: an older node's, or forged); any breaks it."""
    broken_seq: int | None = None
    """The first sequence number that fails (None when intact, or when the fault has none)."""
    reason: str | None = None
    """Why it fails, for an operator."""


class ChainVerifier:
    """Checks links fed in sequence order against the chain's state; stops at the first break."""

    def __init__(self, state: ChainState) -> None:
        self._state = state
        self._expected = state.anchor_seq + 1
        self._prev = state.anchor_hash
        self.checked = 0
        self.broken_seq: int | None = None
        self.reason: str | None = None

    @property
    def broken(self) -> bool:
        return self.reason is not None

    def feed(self, link: ChainLink) -> bool:
        """Check the next link; False once the chain is broken (later links are not looked at)."""
        if self.broken:
            return False
        seq = link.seq
        if seq < self._expected:
            return self._break(seq, f"record {seq} precedes the chain's start: it was purged, yet is there")
        if seq > self._expected:
            return self._break(self._expected, f"record {self._expected} is missing")
        if link.prev_hash != self._prev:
            before = "the purge anchor" if seq == self._state.anchor_seq + 1 else f"record {seq - 1}"
            return self._break(seq, f"record {seq}'s prev_hash does not match the hash of {before}")
        if link.hash is None or link_hash(seq, self._prev, link.values) != link.hash:
            return self._break(seq, f"record {seq}'s fields do not match its hash: it was altered")
        self._prev = link.hash
        self._expected += 1
        self.checked += 1
        return True

    def finish(self, *, unchained: int = 0, first_unchained_id: int | None = None) -> AuditVerification:
        """The result once every link was fed; `unchained` records are stored without a sequence
        number (no audit writer of this version leaves one), the lowest id `first_unchained_id`."""
        tail = self._state.tail_seq
        last = self._expected - 1
        if not self.broken:
            if last < tail:
                self._break(last + 1, f"records {last + 1} to {tail} are missing")
            elif last > tail:
                self._break(tail + 1, f"record {tail + 1} lies beyond the chain's recorded end")
            elif self._prev != self._state.tail_hash:
                self._break(tail, f"record {tail} does not end the chain as recorded: its hash differs")
            elif unchained or first_unchained_id is not None:
                more = f" and {unchained - 1} more" if unchained > 1 else ""
                self.reason = f"a record outside the chain (id {first_unchained_id}){more}"
        return AuditVerification(
            intact=not self.broken,
            checked=self.checked,
            first_seq=self._state.anchor_seq + 1,
            last_seq=max(tail, self._state.anchor_seq),
            head_hash=self._state.tail_hash,
            unchained=unchained,
            broken_seq=self.broken_seq,
            reason=self.reason,
        )

    def _break(self, seq: int, reason: str) -> bool:
        self.broken_seq, self.reason = seq, reason
        return False


def purgeable(links: Sequence[ChainLink], before: datetime) -> int:
    """How many of `links` (in sequence order, from the anchor) may be purged: the leading ones
    older than `before`. A record goes only with every record stored before it, so the chain stays
    whole; one stamped later by a node whose clock ran ahead holds back those after it until it
    too is older than `before`. Never one younger than `before`."""
    count = 0
    for link in links:
        when = link.values[_TIME]
        if not isinstance(when, datetime) or when >= before:
            break
        count += 1
    return count


def record_values(record: AuditRecord) -> tuple[object, ...]:
    """`record`'s fields in `FIELDS` order, as they are stored (enums as their values)."""
    return (
        record.time,
        record.request_id,
        record.channel.value,
        record.principal_id,
        record.workflow,
        str(record.action),
        record.outcome.value,
        record.error_code,
        record.duration_ms,
        record.client_addr,
        record.reason,
        record.tenant_id,
    )
