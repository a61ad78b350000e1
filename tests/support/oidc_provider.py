"""A real OpenID provider for the tests: authlib's authorization server behind Starlette on 127.0.0.1.

Run as `python -m tests.support.oidc_provider --port N --config realms.json`. Each realm (like a
Keycloak realm) is an issuer `http://127.0.0.1:N/realms/<name>` with its own clients; the code flow
requires PKCE S256 and a nonce. The login is auto-approved for the test user named by `login_hint`
(an unknown one is refused with `access_denied`). Test hooks, for negative tests of a relying party:
`test_id_token=<mode>` on the authorization request makes the token endpoint mint a deliberately bad
ID token (see `BAD_ID_TOKENS`); `POST /test/rotate` rotates the RSA signing key; `GET /test/stats`
counts discovery and JWKS fetches. A realm with `claimed_issuer` lies about its issuer in discovery.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]  # authlib ships no type hints
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    JsonRequest,
    OAuth2Error,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload  # type: ignore[import-untyped]
from authlib.oauth2.rfc6750 import BearerTokenGenerator  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oauth2.rfc9207 import IssuerParameter  # type: ignore[import-untyped]
from authlib.oidc.core import AuthorizationCodeMixin  # type: ignore[import-untyped]
from authlib.oidc.core.grants import OpenIDCode  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, KeySet, OctKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

USERS: Mapping[str, Mapping[str, Any]] = {
    "alice": {
        "sub": "u-alice-7f3a",
        "preferred_username": "alice",
        "name": "Alice Example",
        "email": "alice@example.test",
        "email_verified": True,
        "groups": ["admins", "developers"],
        "department": "engineering",
    },
    "bob": {
        "sub": "u-bob-91c2",
        "preferred_username": "bob",
        "name": "Bob Example",
        "email": "bob@example.test",
        "email_verified": True,
        "groups": ["developers"],
        "department": "sales",
    },
}
PROFILE_CLAIMS = ("preferred_username", "name", "groups", "department")
EMAIL_CLAIMS = ("email", "email_verified")

BAD_ID_TOKENS = (
    "foreign_signature",  # signed by a key the provider never published, under the real kid
    "unknown_kid",  # signed by a foreign key that names a kid the JWKS does not have
    "alg_none",  # unsigned
    "hs256_client_secret",  # HMAC with the client secret as key (algorithm confusion)
    "wrong_audience",
    "extra_audience_without_azp",
    "expired",
    "not_yet_valid",
    "wrong_nonce",
    "wrong_issuer",
)
CODE_TTL_S = 60


@dataclass
class Client(ClientMixin):  # type: ignore[misc]  # authlib ships no type hints
    client_id: str
    redirect_uris: list[str]
    auth_method: str = "client_secret_basic"
    client_secret: str | None = None
    alg: str = "RS256"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        wanted = (scope or "openid").split()
        return " ".join(s for s in wanted if s in ("openid", "profile", "email"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]  # authlib ships no type hints
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: Mapping[str, Any]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    mode: str
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class Keys:
    """The provider's signing keys, one per algorithm; retired RSA keys stay published."""

    def __init__(self) -> None:
        self.signing: dict[str, Key] = {
            "RS256": RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"}),
            "ES256": ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}),
            "EdDSA": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1", "use": "sig"}),
        }
        self.published: list[Key] = list(self.signing.values())
        self.foreign = RSAKey.generate_key(2048)

    def rotate(self) -> str:
        kid = f"rsa-{len(self.published) + 1}"
        self.signing["RS256"] = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})
        self.published.append(self.signing["RS256"])
        return kid

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet(self.published).as_dict(private=False))


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def spoil_claims(claims: dict[str, Any], client: Client, mode: str) -> dict[str, Any]:
    """The ID-token claims for `client`, with the defect `mode` asks for (if it is a claims defect)."""
    now = int(time.time())
    spoiled = {**claims, "azp": client.client_id}
    if mode == "wrong_audience":
        spoiled["aud"] = ["another-client"]
    elif mode == "extra_audience_without_azp":
        spoiled["aud"] = [client.client_id, "another-client"]
        del spoiled["azp"]
    elif mode == "expired":
        spoiled.update(iat=now - 7200, auth_time=now - 7200, exp=now - 3600)
    elif mode == "not_yet_valid":
        spoiled["nbf"] = now + 3600
    elif mode == "wrong_nonce":
        spoiled["nonce"] = generate_token(24)
    elif mode == "wrong_issuer":
        spoiled["iss"] = "https://evil.example.test"
    return spoiled


def mint_id_token(claims: dict[str, Any], client: Client, mode: str, keys: Keys) -> str:
    """Sign the ID token for `client`, spoiling it as `mode` asks."""
    claims = spoil_claims(claims, client, mode)
    if mode == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    key, alg, kid = keys.signing[client.alg], client.alg, keys.signing[client.alg].kid
    if mode == "foreign_signature":
        key, alg, kid = keys.foreign, "RS256", keys.signing["RS256"].kid
    elif mode == "unknown_kid":
        key, alg, kid = keys.foreign, "RS256", "foreign-1"
    elif mode == "hs256_client_secret":
        key, alg, kid = OctKey.import_key(client.client_secret or "none"), "HS256", keys.signing["RS256"].kid
    return jwt.encode({"alg": alg, "kid": kid}, claims, key, [alg])


class IdToken(OpenIDCode):  # type: ignore[misc]  # authlib ships no type hints
    """OpenID Connect on the code grant; the ID token comes from `mint_id_token`."""

    def __init__(self, realm: Realm) -> None:
        super().__init__(require_nonce=True)
        self.realm = realm

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return (request.payload.client_id, nonce) in self.realm.used_nonces

    def generate_user_info(self, user: Mapping[str, Any], scope: str) -> dict[str, Any]:
        scopes = scope.split()
        names = [
            *(PROFILE_CLAIMS if "profile" in scopes else ()),
            *(EMAIL_CLAIMS if "email" in scopes else ()),
        ]
        return {"sub": user["sub"], **{name: user[name] for name in names}}

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        code: Code = request.authorization_code
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.realm.issuer,
            "aud": [request.client.client_id],
            "iat": now,
            "exp": now + 300,
            "auth_time": code.auth_time,
        }
        if code.nonce:
            claims["nonce"] = code.nonce
        claims.update(self.generate_user_info(request.user, token["scope"]))
        return mint_id_token(claims, request.client, code.mode, self.realm.keys)


def require_s256(grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
    """PKCE is mandatory for every client here, and only with S256 (OAuth 2.1)."""
    data = grant.request.payload.data
    if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
        raise InvalidRequestError("PKCE with code_challenge_method=S256 is required.")


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]  # authlib ships no type hints
    TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

    def __init__(self, request: OAuth2Request, server: RealmServer) -> None:
        super().__init__(request, server)
        self.register_hook("after_validate_authorization_request_payload", require_s256)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        realm: Realm = self.server.realm
        mode = data.get("test_id_token", "normal")
        if mode != "normal" and mode not in BAD_ID_TOKENS:
            raise InvalidRequestError("Unknown test_id_token mode.")
        nonce = data.get("nonce")
        if nonce:
            realm.used_nonces.add((request.client.client_id, nonce))
        realm.codes[code] = (
            time.monotonic() + CODE_TTL_S,
            Code(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                user=request.user,
                nonce=nonce,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                mode=mode,
            ),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        entry: tuple[float, Code] | None = self.server.realm.codes.get(code)
        if entry is None or entry[0] < time.monotonic() or entry[1].client_id != client.client_id:
            return None
        return entry[1]

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.realm.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Mapping[str, Any]:
        return authorization_code.user


@dataclass
class Reply:
    """What authlib answers, before it becomes a Starlette response (RFC 9207 edits `location`)."""

    status: int
    body: Any
    headers: list[tuple[str, str]]
    location: str | None = None

    def to_response(self) -> Response:
        headers = {k: v for k, v in self.headers if k.lower() != "location"}
        if self.location is not None:
            headers["Location"] = self.location
        if isinstance(self.body, dict):
            return JSONResponse(self.body, status_code=self.status, headers=headers)
        return Response(self.body or b"", status_code=self.status, headers=headers)


class FormRequest(OAuth2Request):  # type: ignore[misc]  # authlib ships no type hints
    """An OAuth 2 request whose query and form were read before authlib's synchronous code runs."""

    def __init__(self, request: Request, form: Mapping[str, str]) -> None:
        super().__init__(method=request.method, uri=str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = dict(form)
        self.payload = BasicOAuth2Payload({**self._args, **self._form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class RealmServer(AuthorizationServer):  # type: ignore[misc]  # authlib ships no type hints
    def __init__(self, realm: Realm) -> None:
        super().__init__(scopes_supported=["openid", "profile", "email"])
        self.realm = realm
        self.register_token_generator("default", BearerTokenGenerator(lambda *a, **k: generate_token(42)))
        self.register_grant(CodeGrant, [CodeChallenge(required=True), IdToken(realm)])
        self.issuer_parameter = IssuerParameter()
        self.issuer_parameter.get_issuer = lambda: realm.issuer
        self.register_extension(self.issuer_parameter)

    def query_client(self, client_id: str) -> Client | None:
        return self.realm.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Access tokens are not used by anything here (no userinfo endpoint)."""

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: JsonRequest) -> JsonRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Reply:
        location = next((v for k, v in headers if k.lower() == "location"), None)
        return Reply(status, body, list(headers), location)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners."""


@dataclass
class Realm:
    name: str
    issuer: str
    keys: Keys
    clients: dict[str, Client]
    auth_methods: list[str]
    claimed_issuer: str | None = None
    codes: dict[str, tuple[float, Code]] = field(default_factory=dict)
    used_nonces: set[tuple[str, str]] = field(default_factory=set)
    server: RealmServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = RealmServer(self)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.claimed_issuer or self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted(self.keys.signing),
            "scopes_supported": ["openid", "profile", "email"],
            "token_endpoint_auth_methods_supported": self.auth_methods,
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", *PROFILE_CLAIMS, *EMAIL_CLAIMS],
            "authorization_response_iss_parameter_supported": True,
        }


def build_app(base_url: str, config: Mapping[str, Any]) -> Starlette:
    """The provider as an ASGI app serving every realm in `config`."""
    keys = Keys()
    stats: Counter[str] = Counter()
    realms: dict[str, Realm] = {}
    for name, spec in config["realms"].items():
        claimed = spec.get("claimed_issuer_realm")
        realms[name] = Realm(
            name=name,
            issuer=f"{base_url}/realms/{name}",
            keys=keys,
            clients={c["client_id"]: Client(**c) for c in spec["clients"]},
            auth_methods=spec.get("auth_methods", ["client_secret_basic", "client_secret_post", "none"]),
            claimed_issuer=None if claimed is None else f"{base_url}/realms/{claimed}",
        )

    def realm_of(request: Request) -> Realm:
        return realms[request.path_params["realm"]]

    async def discovery(request: Request) -> Response:
        realm = realm_of(request)
        stats[f"discovery:{realm.name}"] += 1
        return JSONResponse(realm.discovery())

    async def jwks(request: Request) -> Response:
        stats[f"jwks:{realm_of(request).name}"] += 1
        return JSONResponse(keys.jwks())

    async def authorize(request: Request) -> Response:
        server = realm_of(request).server
        oauth_request = FormRequest(request, {})
        user = USERS.get(request.query_params.get("login_hint", ""))
        try:
            grant = server.get_consent_grant(oauth_request, end_user=user)
        except OAuth2Error as error:
            reply: Reply = server.handle_error_response(oauth_request, error)
            # authlib adds RFC 9207's `iss` only on its own path; error redirects need it too.
            server.issuer_parameter.add_issuer_parameter(server, reply)
            return reply.to_response()
        reply = server.create_authorization_response(oauth_request, grant_user=user, grant=grant)
        return reply.to_response()

    async def token(request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        reply: Reply = realm_of(request).server.create_token_response(FormRequest(request, fields))
        return reply.to_response()

    async def rotate(request: Request) -> Response:
        return JSONResponse({"kid": keys.rotate()})

    async def read_stats(request: Request) -> Response:
        return JSONResponse(dict(stats))

    return Starlette(
        routes=[
            Route("/realms/{realm}/.well-known/openid-configuration", discovery),
            Route("/realms/{realm}/jwks", jwks),
            Route("/realms/{realm}/authorize", authorize),
            Route("/realms/{realm}/token", token, methods=["POST"]),
            Route("/test/rotate", rotate, methods=["POST"]),
            Route("/test/stats", read_stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    # Plain HTTP on loopback only; authlib refuses it unless told, and "none"/EdDSA warn by design.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    warnings.simplefilter("ignore", SecurityWarning)
    config = json.loads(args.config.read_text())
    app = build_app(f"http://127.0.0.1:{args.port}", config)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
