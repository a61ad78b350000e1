"""The benchmark report's pure parts: ratios, verdicts, the table, wrk parsing and answer checks."""

import json

import pytest
from bench.__main__ import FLOORS
from bench.check import SUM, WrongAnswerError, check_mcp, check_rest, contains_value
from bench.load import WrkOutputError, lua_script, parse_wrk
from bench.measure import ROWS
from bench.nexus_server import Profile
from bench.report import (
    MIB,
    REQ_PER_S,
    SECONDS,
    SPECS,
    Measurement,
    Spec,
    Status,
    Target,
    as_json,
    evaluate,
    render,
)

FLOOR = Spec("floor", "floor", REQ_PER_S)
NEXUS = Spec("nexus", "nexus", REQ_PER_S, "floor", Target(min_ratio=0.5))
HELP = Spec("help", "nexus --help", SECONDS, target=Target(max_value=0.5))
RSS = Spec("rss", "rss", MIB, target=Target(max_value=90.0))

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:18766/workflows/add/execute
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   632.69us  272.64us   5.17ms   86.40%
    Req/Sec     6.47k     0.88k   11.30k    92.68%
  Latency Distribution
     50%  597.00us
     75%  651.00us
     90%  795.00us
     99%    1.39ms
  26401 requests in 2.10s, 3.60MB read
Requests/sec:  12572.43
Transfer/sec:      1.71MB
"""


def test_row_at_half_the_floor_passes_a_half_ratio_target() -> None:
    lines = evaluate([FLOOR, NEXUS], {"floor": Measurement(1000.0, 1.0), "nexus": Measurement(500.0, 2.0)})

    assert [line.status for line in lines] == [Status.REFERENCE, Status.MET]
    assert lines[0].ratio == 1.0
    assert lines[1].ratio == pytest.approx(0.5)


def test_row_below_its_ratio_target_is_a_miss() -> None:
    lines = evaluate([FLOOR, NEXUS], {"floor": Measurement(1000.0), "nexus": Measurement(499.0)})

    assert lines[1].status is Status.MISSED
    assert lines[1].ratio == pytest.approx(0.499)


def test_absolute_targets_pass_only_strictly_under_the_bound() -> None:
    lines = evaluate([HELP, RSS], {"help": Measurement(0.5), "rss": Measurement(89.9)})

    assert [line.status for line in lines] == [Status.MISSED, Status.MET]
    assert all(line.ratio is None for line in lines)


def test_row_whose_floor_failed_fails_with_the_reason_instead_of_a_ratio() -> None:
    lines = evaluate([FLOOR, NEXUS], {"floor": Measurement(error="wrk died"), "nexus": Measurement(800.0)})

    assert lines[0].status is Status.FAILED
    assert lines[0].reason == "wrk died"
    assert lines[1].status is Status.FAILED
    assert lines[1].reason is not None
    assert "floor" in lines[1].reason


def test_row_never_measured_fails_as_not_run() -> None:
    (line,) = evaluate([HELP], {})

    assert line.status is Status.FAILED
    assert line.reason == "not run"


def test_every_row_with_a_floor_names_an_earlier_floor_row_and_has_a_target() -> None:
    keys_so_far: set[str] = set()
    for spec in SPECS:
        if spec.floor is not None:
            assert spec.floor in keys_so_far
            assert spec.target is not None
            assert spec.target.min_ratio is not None
        keys_so_far.add(spec.key)


def test_table_shows_values_ratios_targets_and_failure_reasons() -> None:
    lines = evaluate(
        [FLOOR, NEXUS, HELP], {"floor": Measurement(12345.6, 1.234), "nexus": Measurement(6200.0, 2.5)}
    )

    text = render(lines, notes=["one process each"])

    header, rule, floor_row, nexus_row, help_row, *rest = text.splitlines()
    assert header.split() == ["row", "value", "p99", "ratio", "target", "result"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert floor_row.split() == ["floor", "12,346", "req/s", "1.23", "ms", "1.00x", "floor", "ref"]
    assert nexus_row.split() == ["nexus", "6,200", "req/s", "2.50", "ms", "0.50x", ">=", "0.50x", "pass"]
    assert help_row.split()[-3:] == ["0.500", "s", "FAIL"]
    assert rest == ["FAIL help: not run", "note: one process each"]


def test_table_columns_line_up_right_aligned() -> None:
    lines = evaluate(list(SPECS), {"floor": Measurement(1.0), "import_nexus": Measurement(0.01)})

    rows = render(lines).splitlines()[: 2 + len(SPECS)]

    assert len({len(row) for row in rows}) == 1
    assert rows[0].endswith("result")


def test_json_report_carries_every_row_with_ratio_and_status() -> None:
    lines = evaluate([FLOOR, NEXUS], {"floor": Measurement(1000.0, 1.0), "nexus": Measurement(250.0, 3.0)})

    document = json.loads(json.dumps(as_json(lines, {"command": "python -m bench"})))

    assert document["command"] == "python -m bench"
    nexus = document["rows"][1]
    assert nexus == {
        "key": "nexus",
        "label": "nexus",
        "unit": REQ_PER_S,
        "value": 250.0,
        "p99_ms": 3.0,
        "floor": "floor",
        "ratio": 0.25,
        "target": ">= 0.50x",
        "status": "MISS",
        "reason": None,
    }


def test_wrk_report_gives_rate_p99_in_milliseconds_and_no_errors() -> None:
    load = parse_wrk(WRK_OUTPUT)

    assert load.requests_per_s == pytest.approx(12572.43)
    assert load.p99_ms == pytest.approx(1.39)
    assert load.requests == 26401
    assert (load.bad_status, load.socket_errors) == (0, 0)


@pytest.mark.parametrize(("p99", "ms"), [("850.00us", 0.85), ("1.50s", 1500.0), ("2.00m", 120_000.0)])
def test_wrk_p99_units_convert_to_milliseconds(p99: str, ms: float) -> None:
    load = parse_wrk(WRK_OUTPUT.replace("99%    1.39ms", f"99%    {p99}"))

    assert load.p99_ms == pytest.approx(ms)


def test_wrk_error_counts_are_read() -> None:
    text = WRK_OUTPUT.replace(
        "Requests/sec:",
        "  Socket errors: connect 1, read 2, write 3, timeout 4\n"
        "  Non-2xx or 3xx responses: 17\n"
        "Requests/sec:",
    )

    load = parse_wrk(text)

    assert (load.bad_status, load.socket_errors) == (17, 10)


def test_wrk_output_without_a_rate_is_rejected() -> None:
    with pytest.raises(WrkOutputError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_script_escapes_quotes_backslashes_and_non_ascii() -> None:
    script = lua_script('{"a": "é\\"}', {"Authorization": "Bearer k"})

    assert script.splitlines() == [
        'wrk.method = "POST"',
        'wrk.body = "{\\"a\\": \\"\\195\\169\\\\\\"}"',
        'wrk.headers["Authorization"] = "Bearer k"',
    ]


def test_rest_check_accepts_the_sum_with_extra_fields() -> None:
    body = json.dumps({"run_id": "r1", "outputs": {"add": {"result": SUM}}, "duration_ms": 1.0})

    check_rest(200, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, json.dumps({"outputs": {"add": {"result": SUM + 1}}})),
        (200, json.dumps({"outputs": {}})),
        (200, "not json"),
        (401, json.dumps({"outputs": {"add": {"result": SUM}}})),
    ],
)
def test_rest_check_rejects_a_wrong_sum_a_missing_output_or_an_error_status(status: int, body: str) -> None:
    with pytest.raises(WrongAnswerError):
        check_rest(status, body)


def _rpc(result: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": result})


@pytest.mark.parametrize(
    "result",
    [
        {"content": [], "structuredContent": {"add": {"result": SUM}}, "isError": False},
        {"content": [{"type": "text", "text": json.dumps({"result": SUM})}]},
        {"content": [{"type": "text", "text": str(SUM)}]},
    ],
)
def test_mcp_check_finds_the_sum_in_structured_or_text_content(result: object) -> None:
    check_mcp(200, _rpc(result))


@pytest.mark.parametrize(
    "body",
    [
        _rpc({"content": [{"type": "text", "text": str(SUM)}], "isError": True}),
        _rpc({"content": [{"type": "text", "text": "no number here"}]}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}),
    ],
)
def test_mcp_check_rejects_tool_errors_rpc_errors_and_missing_sums(body: str) -> None:
    with pytest.raises(WrongAnswerError):
        check_mcp(200, body)


def test_contains_value_ignores_booleans_and_finds_nested_numbers() -> None:
    assert contains_value({"a": [{"b": 7}]}, 7)
    assert not contains_value({"a": True}, 1)


def test_each_nexus_servers_rest_rows_are_ratios_to_the_floor_measured_right_before_it() -> None:
    floors = {spec.key: spec.floor for spec in SPECS}

    assert [key for key, _ in FLOORS] == ["floor", "floor_auth", "floor_full"]
    for key, profile in FLOORS:
        rows = ROWS[profile]
        rest_rows = [rows.rest] if profile is Profile.DEFAULTS else [rows.rest, rows.second]
        assert all(floors[row] == key for row in rest_rows)
        assert floors[key] is None  # itself a floor
