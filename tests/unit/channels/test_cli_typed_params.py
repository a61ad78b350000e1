"""`-p key=value` stays a raw string for the server to coerce; `-p key:=<json>` is typed here."""

from __future__ import annotations

import pytest

from nexus.channels.cli.pairs import parse_params
from nexus.channels.cli.problem import Failure


def test_plain_pairs_stay_strings_and_json_pairs_are_typed() -> None:
    assert parse_params(["zip=007", "count:=3", 'tags:=["a", 1]', "on:=true", "none:=null", 'who:="x"']) == {
        "zip": "007",
        "count": 3,
        "tags": ["a", 1],
        "on": True,
        "none": None,
        "who": "x",
    }


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        (["count:=three"], "takes a JSON value"),
        (["count=1", "count:=1"], "more than once"),
        ([":=1"], "expected -p key:=<json>"),
    ],
)
def test_bad_typed_pairs_are_usage_errors(pairs: list[str], problem: str) -> None:
    with pytest.raises(Failure) as refused:
        parse_params(pairs)
    assert problem in str(refused.value.document())
    assert refused.value.exit_code == 2
