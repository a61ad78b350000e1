"""The CLI's HTTP client at its edge: what it sends, and what it makes of answers no Nexus would give."""

from __future__ import annotations

import json

import httpx2
import pytest

from nexus.channels.cli.client import CliClient
from nexus.channels.cli.problem import Failure


def client_answering(status: int, body: bytes, content_type: str, seen: list[httpx2.Request]) -> CliClient:
    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    return CliClient("http://nexus.test:8000/", token="nxk_a_b", transport=httpx2.MockTransport(answer))


def test_run_posts_raw_params_with_the_bearer_token_to_a_quoted_path() -> None:
    seen: list[httpx2.Request] = []
    document = {"run_id": "r", "workflow": "a/b", "outputs": {}, "duration_ms": 1}
    with client_answering(200, json.dumps(document).encode(), "application/json", seen) as client:
        assert client.run("a/b", {"n": "1"}) == document
    [request] = seen
    assert request.method == "POST"
    assert request.url.raw_path == b"/cli/v1/workflows/a%2Fb/run"
    assert request.headers["authorization"] == "Bearer nxk_a_b"
    assert json.loads(request.content) == {"params": {"n": "1"}}


def test_a_success_that_is_not_json_is_an_unexpected_answer() -> None:
    with (
        client_answering(200, b"<html>hi</html>", "text/html", []) as client,
        pytest.raises(Failure) as caught,
    ):
        client.describe("x")
    assert caught.value.exit_code == 70
    assert "is this a Nexus server?" in str(caught.value)


def test_an_html_error_page_is_reported_by_its_status() -> None:
    with (
        client_answering(503, b"<html>down</html>", "text/html", []) as client,
        pytest.raises(Failure) as caught,
    ):
        client.list_workflows()
    assert (caught.value.title, caught.value.detail, caught.value.exit_code) == (
        "HTTP 503",
        "Service Unavailable",
        69,
    )


def test_a_json_error_without_a_problem_code_falls_back_on_the_status() -> None:
    body = b'{"detail": "Not Found"}'
    with client_answering(404, body, "application/json", []) as client, pytest.raises(Failure) as caught:
        client.describe("x")
    assert (caught.value.title, caught.value.detail, caught.value.exit_code) == ("HTTP 404", "Not Found", 2)


def test_a_listing_without_workflows_is_an_unexpected_answer() -> None:
    with (
        client_answering(200, b'{"items": []}', "application/json", []) as client,
        pytest.raises(Failure) as caught,
    ):
        client.list_workflows()
    assert caught.value.exit_code == 70


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", ""])
def test_a_url_that_is_not_http_is_a_usage_error(url: str) -> None:
    with pytest.raises(Failure) as caught:
        CliClient(url)
    assert caught.value.exit_code == 2
