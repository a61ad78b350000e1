"""The test OpenID provider as a session fixture: a separate process on a free loopback port.

`oidc_provider` starts `tests.support.oidc_provider`, waits until its discovery answers and stops it
by PID at the end. The handle builds relying-party settings for its realms and plays the browser.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest

from nexus.backends.auth.oidc import OidcSettings

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://127.0.0.1:8765/auth/oidc/callback"
CLIENT_SECRET = "test-only-client-secret-4c9d2e7a"
START_TIMEOUT_S = 20.0


def _client(client_id: str, auth_method: str = "client_secret_basic", alg: str = "RS256") -> dict[str, Any]:
    secret = None if auth_method == "none" else CLIENT_SECRET
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [REDIRECT_URI],
        "auth_method": auth_method,
        "alg": alg,
    }


REALMS: dict[str, Any] = {
    "realms": {
        "main": {
            "clients": [
                _client("nexus"),
                _client("nexus-public", "none"),
                _client("nexus-es", alg="ES256"),
                _client("nexus-ed", alg="EdDSA"),
            ]
        },
        "post": {"auth_methods": ["client_secret_post"], "clients": [_client("nexus", "client_secret_post")]},
        # Its discovery document claims to be realm "main": an issuer mix-up.
        "mixup": {"claimed_issuer_realm": "main", "clients": [_client("nexus")]},
    }
}


def app_redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}/auth/sso/oidc/callback"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class OidcProvider:
    """Handle on the running provider process.

    `app_port` is where a Nexus app under test must serve its API: the client "nexus-app" of
    realm "main" redirects to that port's `/auth/sso/oidc/callback`.
    """

    base_url: str
    pid: int
    app_port: int = 0

    @property
    def app_redirect_uri(self) -> str:
        return app_redirect_uri(self.app_port)

    def issuer(self, realm: str = "main") -> str:
        return f"{self.base_url}/realms/{realm}"

    def settings(self, realm: str = "main", client_id: str = "nexus", **overrides: Any) -> OidcSettings:
        """Relying-party settings for a client registered in `realm`."""
        secret = None if client_id == "nexus-public" else CLIENT_SECRET
        options: dict[str, Any] = {
            "issuer": self.issuer(realm),
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uri": REDIRECT_URI,
            **overrides,
        }
        return OidcSettings(**options)

    async def authorize(self, url: str, *, login_hint: str = "alice", **extra: str) -> dict[str, str]:
        """Play the browser: open the authorization URL, return the callback's query parameters."""
        query = urlencode({"login_hint": login_hint, **extra})
        async with httpx2.AsyncClient(follow_redirects=False, timeout=5) as http:
            response = await http.get(f"{url}&{query}")
        location = response.headers.get("location", "")
        assert response.status_code == 302, response.text
        assert location.startswith(REDIRECT_URI + "?"), location
        return dict(parse_qsl(urlsplit(location).query))

    async def token_request(self, form: dict[str, str], realm: str = "main") -> httpx2.Response:
        """POST straight to the token endpoint as client "nexus" (client_secret_basic)."""
        async with httpx2.AsyncClient(timeout=5) as http:
            return await http.post(
                f"{self.issuer(realm)}/token", data=form, auth=httpx2.BasicAuth("nexus", CLIENT_SECRET)
            )

    async def stats(self) -> dict[str, int]:
        """How often each realm's discovery document and JWKS were fetched."""
        async with httpx2.AsyncClient(timeout=5) as http:
            counts: dict[str, int] = (await http.get(f"{self.base_url}/test/stats")).json()
        return counts

    async def rotate_key(self) -> str:
        """Sign with a new RSA key from now on; the old one stays published. The new kid."""
        async with httpx2.AsyncClient(timeout=5) as http:
            kid: str = (await http.post(f"{self.base_url}/test/rotate")).json()["kid"]
        return kid


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the OIDC provider exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx2.get(url, timeout=0.5).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the OIDC provider did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """The provider process, started once for the session and stopped by its PID."""
    workdir = tmp_path_factory.mktemp("oidc-provider")
    config, log = workdir / "realms.json", workdir / "provider.log"
    app_port = free_port()
    app_client = {**_client("nexus-app"), "redirect_uris": [app_redirect_uri(app_port)]}
    realms = json.loads(json.dumps(REALMS))
    realms["realms"]["main"]["clients"].append(app_client)
    config.write_text(json.dumps(realms))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.support.oidc_provider",
        "--port",
        str(port),
        "--config",
        str(config),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        provider = OidcProvider(base_url=f"http://127.0.0.1:{port}", pid=process.pid, app_port=app_port)
        _wait_until_ready(process, f"{provider.issuer()}/.well-known/openid-configuration", log)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
