"""The report: which rows exist, their targets, ratios to their floors, and the printed table.

Pure: no processes, no clock, no network, so the arithmetic and the verdicts are unit-tested.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REQ_PER_S = "req/s"
SECONDS = "s"
MIB = "MiB"

AUTH_ON_NOTE = (
    "auth on = auth (an API key, or a channel token of a session logged in on the platform's route: "
    "EdDSA JWT + session check) + RBAC (50 roles; the caller's role allows `add` through a tag) + ABAC "
    "(5 policies, 3 apply to `add` and are evaluated per call) + rate limit (never reached) + audit + "
    "metrics; no tenancy (no tenant manager or base domain, `add` not tenant-scoped, key and user of no "
    "tenant); checked before timing: a workflow no role of the key may run is refused"
)
FULL_PIPELINE_NOTE = (
    "full pipeline = auth (an API key, or a channel token of a session logged in on the tenant's route: "
    "EdDSA JWT + session check) + tenancy (moderate isolation; the tenant routed by the Host's "
    "subdomain, bench.api.bench, and the caller's membership checked; the rate limit keyed per tenant; "
    "the requests-per-hour quota counted and a concurrent-workflow lease taken and released per run, "
    "both quotas set never to be reached; checked before timing: without the tenant's Host the key gets "
    "404 tenant_not_found, and one call counts once against the quotas) + RBAC (50 roles; the caller's "
    "role allows `add` through a tag) + ABAC (5 policies, 3 apply to `add` and are evaluated per call) "
    "+ rate limit (never reached) + audit + metrics"
)


class Status(enum.Enum):
    REFERENCE = "ref"
    MET = "pass"
    MISSED = "MISS"
    FAILED = "FAIL"
    """Not measured: the server did not start, answered wrongly, or its floor is missing."""


@dataclass(frozen=True, slots=True)
class Target:
    """At least `min_ratio` of the floor's value, or a value under `max_value` in the row's unit."""

    min_ratio: float | None = None
    max_value: float | None = None

    def describe(self, unit: str) -> str:
        if self.min_ratio is not None:
            return f">= {self.min_ratio:.2f}x"
        return f"< {_number(self.max_value, unit)}"

    def is_met(self, value: float, ratio: float | None) -> bool:
        if self.min_ratio is not None:
            return ratio is not None and ratio >= self.min_ratio
        return self.max_value is not None and value < self.max_value


@dataclass(frozen=True, slots=True)
class Spec:
    """One row: what it measures, and what it is compared with."""

    key: str
    label: str
    unit: str
    floor: str | None = None
    """Key of the row this one is a ratio to; a row without floor or target is itself a floor."""
    target: Target | None = None


SPECS: tuple[Spec, ...] = (
    Spec("floor", "floor: bare Starlette", REQ_PER_S),
    Spec("nexus_defaults", "nexus defaults (auth off)", REQ_PER_S, "floor", Target(min_ratio=0.5)),
    Spec("floor_auth", "floor: bare Starlette, again", REQ_PER_S),
    Spec(
        "nexus_auth",
        "nexus auth on, RBAC+ABAC (API key)",
        REQ_PER_S,
        "floor_auth",
        Target(min_ratio=0.33),
    ),
    Spec(
        "nexus_auth_session",
        "nexus auth on, RBAC+ABAC (session token)",
        REQ_PER_S,
        "floor_auth",
        Target(min_ratio=0.33),
    ),
    Spec("floor_full", "floor: bare Starlette, again", REQ_PER_S),
    Spec(
        "nexus_full",
        "nexus full pipeline, RBAC+ABAC on (API key)",
        REQ_PER_S,
        "floor_full",
        Target(min_ratio=0.33),
    ),
    Spec(
        "nexus_session",
        "nexus full pipeline, RBAC+ABAC on (session token)",
        REQ_PER_S,
        "floor_full",
        Target(min_ratio=0.33),
    ),
    Spec("mcp_floor", "mcp floor: bare SDK server", REQ_PER_S),
    Spec("nexus_mcp", "nexus mcp tools/call", REQ_PER_S, "mcp_floor", Target(min_ratio=0.7)),
    Spec("import_nexus", 'python -c "import nexus"', SECONDS, target=Target(max_value=0.4)),
    Spec("nexus_help", "nexus --help", SECONDS, target=Target(max_value=0.5)),
    Spec("rss_defaults", "idle RSS, nexus defaults", MIB, target=Target(max_value=90.0)),
    Spec("rss_auth", "idle RSS, nexus auth on", MIB, target=Target(max_value=90.0)),
    Spec("rss_full", "idle RSS, nexus full pipeline", MIB, target=Target(max_value=90.0)),
)


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the harness saw for one row: a value, or the reason there is none."""

    value: float | None = None
    p99_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One evaluated row of the table."""

    spec: Spec
    measurement: Measurement
    ratio: float | None
    status: Status
    reason: str | None


def evaluate(specs: Sequence[Spec], measured: Mapping[str, Measurement]) -> list[Line]:
    """Compute each row's ratio to its floor and its verdict; unmeasured rows fail with a reason."""
    return [_evaluate_one(spec, measured) for spec in specs]


def _evaluate_one(spec: Spec, measured: Mapping[str, Measurement]) -> Line:
    m = measured.get(spec.key, Measurement(error="not run"))
    if m.value is None:
        return Line(spec, m, None, Status.FAILED, m.error or "no value")
    if spec.target is None:
        return Line(spec, m, 1.0, Status.REFERENCE, None)
    ratio = None
    if spec.floor is not None:
        floor_value = measured.get(spec.floor, Measurement()).value
        if not floor_value:
            return Line(spec, m, None, Status.FAILED, f"its floor ({spec.floor}) was not measured")
        ratio = m.value / floor_value
    status = Status.MET if spec.target.is_met(m.value, ratio) else Status.MISSED
    return Line(spec, m, ratio, status, None)


HEADERS = ("row", "value", "p99", "ratio", "target", "result")


def render(lines: Sequence[Line], notes: Sequence[str] = ()) -> str:
    """The table as fixed-width text, followed by each failure's reason and the notes."""
    cells = [HEADERS, *(_cells(line) for line in lines)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    text = [_format_row(cells[0], widths), "  ".join("-" * w for w in widths)]
    text += [_format_row(row, widths) for row in cells[1:]]
    text += [f"FAIL {line.spec.key}: {line.reason}" for line in lines if line.status is Status.FAILED]
    text += [f"note: {note}" for note in notes]
    return "\n".join(text)


def _format_row(row: Sequence[str], widths: Sequence[int]) -> str:
    # The label column reads left to right; numbers line up on the right.
    parts = [
        row[0].ljust(widths[0]),
        *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
    ]
    return "  ".join(parts).rstrip()


def _cells(line: Line) -> tuple[str, str, str, str, str, str]:
    spec, m = line.spec, line.measurement
    target = spec.target.describe(spec.unit) if spec.target else "floor"
    return (
        spec.label,
        _number(m.value, spec.unit),
        "-" if m.p99_ms is None else f"{m.p99_ms:.2f} ms",
        "-" if line.ratio is None else f"{line.ratio:.2f}x",
        target,
        line.status.value,
    )


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == REQ_PER_S:
        return f"{value:,.0f} {unit}"
    if unit == SECONDS:
        return f"{value:.3f} {unit}"
    return f"{value:.1f} {unit}"


def as_json(lines: Sequence[Line], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The same table as a JSON document, with the run's metadata (command, duration, machine)."""
    rows = [
        {
            "key": line.spec.key,
            "label": line.spec.label,
            "unit": line.spec.unit,
            "value": line.measurement.value,
            "p99_ms": line.measurement.p99_ms,
            "floor": line.spec.floor,
            "ratio": line.ratio,
            "target": line.spec.target.describe(line.spec.unit) if line.spec.target else None,
            "status": line.status.value,
            "reason": line.reason,
        }
        for line in lines
    ]
    return {**meta, "rows": rows}
