"""OpenID Connect relying party: the authorization code flow with PKCE, as the "oidc" `SsoProtocol`.

Owns discovery, the authorization URL, the code exchange and ID-token validation. authlib supplies
PKCE and random tokens, joserfc the JOSE checks, httpx2 the HTTP. Imports core auth contracts and
errors only; never a web framework.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx2
from authlib.common.security import generate_token  # type: ignore[import-untyped]  # no stubs
from authlib.common.urls import add_params_to_uri  # type: ignore[import-untyped]  # no stubs
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]  # no stubs
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError, SecurityWarning
from joserfc.jwk import Key, import_key

from nexus.core.auth.model import ExternalIdentity
from nexus.core.auth.ports import EphemeralStore, SsoRedirect
from nexus.errors import AuthenticationError, ConfigurationError, DependencyUnavailableError

_EMPTY: Mapping[str, str] = MappingProxyType({})
_KEY_TYPES: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
SUPPORTED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_STATE_PATTERN: Final = re.compile(r"[A-Za-z0-9]{16,128}")
# Error codes a provider may send back (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6); others are not echoed.
_PROVIDER_ERRORS: Final = frozenset(
    {
        "access_denied", "invalid_request", "unauthorized_client", "unsupported_response_type",
        "invalid_scope", "server_error", "temporarily_unavailable", "interaction_required",
        "login_required", "account_selection_required", "consent_required",
    }
)  # fmt: skip
_UNREACHABLE = "The identity provider cannot be reached."
_UNUSABLE = "The identity provider's configuration is not usable by Nexus."


def _is_safe_url(url: object) -> bool:
    """HTTPS, or plain HTTP to a loopback address (a provider on the same machine)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcSettings:
    """One OpenID provider and this application's registration with it."""

    issuer: str
    """The provider's issuer URL, exactly as its discovery document and ID tokens state it."""
    client_id: str
    """The client id registered at the provider."""
    redirect_uri: str
    """The callback URL registered at the provider."""
    client_secret: str | None = field(default=None, repr=False)
    """The client secret; None for a public client, which relies on PKCE alone."""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    """Scopes requested; "openid" is required."""
    roles_claim: str = "groups"
    """The ID-token claim holding group or role names (a dotted path reaches into objects)."""
    role_map: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Claim value -> Nexus role; values not listed give no role."""
    claims_as_roles: bool = False
    """Also use the roles-claim values themselves as Nexus roles."""
    attributes: tuple[str, ...] = ()
    """ID-token claims exposed as identity attributes (ABAC reads them)."""
    allowed_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    """ID-token signature algorithms accepted; asymmetric only (never "none" or HS*)."""
    state_ttl_s: float = 600
    """How long a begun login may take before its state is forgotten."""
    leeway_s: float = 60
    """Clock skew tolerated on `exp`, `iat` and `nbf`."""
    timeout_s: float = 5
    """Timeout of each request to the provider."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role_map", MappingProxyType(dict(self.role_map)))
        object.__setattr__(self, "scopes", tuple(self.scopes))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "allowed_algorithms", tuple(self.allowed_algorithms))
        self._validate_endpoints()
        self._validate_protocol()

    def _validate_endpoints(self) -> None:
        _require(_is_safe_url(self.issuer), "issuer", "an https URL (http only on loopback)")
        _require(_is_safe_url(self.redirect_uri), "redirect_uri", "an https URL (http only on loopback)")
        _require(isinstance(self.client_id, str) and bool(self.client_id), "client_id", "a non-empty string")
        secret_ok = self.client_secret is None or (isinstance(self.client_secret, str) and self.client_secret)
        _require(bool(secret_ok), "client_secret", "a non-empty string or None")

    def _validate_protocol(self) -> None:
        _require("openid" in self.scopes, "scopes", 'a tuple including "openid"')
        algorithms = set(self.allowed_algorithms)
        _require(
            bool(algorithms) and algorithms <= SUPPORTED_ALGORITHMS,
            "allowed_algorithms",
            f"asymmetric JWS algorithms among {sorted(SUPPORTED_ALGORITHMS)}",
        )
        _require(bool(self.roles_claim), "roles_claim", "a claim name")
        for name in ("state_ttl_s", "timeout_s"):
            _require(_number(getattr(self, name)) > 0, name, "a positive number of seconds")
        _require(0 <= _number(self.leeway_s) <= 300, "leeway_s", "between 0 and 300 seconds")


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1.0


def _require(ok: bool, name: str, expected: str) -> None:
    # The message never shows the value: it may be the client secret.
    if not ok:
        raise ConfigurationError(f"OIDC setting {name} must be {expected}.")


@dataclass(frozen=True, slots=True)
class _Provider:
    """What discovery told us, checked."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    client_auth: str
    sends_issuer: bool


@dataclass(frozen=True, slots=True)
class _Pending:
    verifier: str
    nonce: str
    return_to: str


class OidcClient:
    """Relying party for one OpenID provider; pending logins live in an `EphemeralStore`."""

    name = "oidc"

    def __init__(self, settings: OidcSettings, ephemeral: EphemeralStore) -> None:
        self._s = settings
        self._ephemeral = ephemeral
        digest = hashlib.sha256(f"{settings.issuer}\n{settings.client_id}".encode()).hexdigest()[:16]
        # Two providers sharing one store never finish each other's logins.
        self._namespace = f"sso:oidc:{digest}:state:"
        self._provider: _Provider | None = None
        self._keys: list[Key] | None = None

    async def begin(self, *, return_to: str) -> SsoRedirect:
        """Build the authorization URL and remember the PKCE verifier, nonce and `return_to`."""
        async with self._http() as http:
            provider = await self._discover(http)
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        pending = {"verifier": verifier, "nonce": nonce, "return_to": return_to}
        await self._ephemeral.put(self._namespace + state, json.dumps(pending), self._s.state_ttl_s)
        params = {
            "response_type": "code",
            "client_id": self._s.client_id,
            "redirect_uri": self._s.redirect_uri,
            "scope": " ".join(self._s.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return SsoRedirect(url=add_params_to_uri(provider.authorization_endpoint, params), state=state)

    async def complete(self, params: Mapping[str, str]) -> tuple[ExternalIdentity, str]:
        """Check the callback, redeem the code and validate the ID token; the identity and `return_to`."""
        pending = await self._take_pending(params.get("state"))
        async with self._http() as http:
            provider = await self._discover(http)
            code = self._check_callback(params, provider)
            id_token = await self._exchange(http, provider, code, pending.verifier)
            claims = await self._verify(http, provider, id_token, pending.nonce)
        return self._identity(claims), pending.return_to

    def metadata(self) -> str | None:
        return None

    def _http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=self._s.timeout_s, follow_redirects=False)

    async def _take_pending(self, state: object) -> _Pending:
        value = None
        if isinstance(state, str) and _STATE_PATTERN.fullmatch(state):
            value = await self._ephemeral.take(self._namespace + state)
        if value is None:
            raise AuthenticationError("The sign-in is unknown, expired or already used; start again.")
        data = json.loads(value)
        return _Pending(verifier=data["verifier"], nonce=data["nonce"], return_to=data["return_to"])

    def _check_callback(self, params: Mapping[str, str], provider: _Provider) -> str:
        # RFC 9207: a provider that names itself in the response must name the right issuer.
        if (provider.sends_issuer or "iss" in params) and params.get("iss") != self._s.issuer:
            raise AuthenticationError("The sign-in response came from another identity provider.")
        error = params.get("error")
        if error is not None:
            shown = f" ({error})" if error in _PROVIDER_ERRORS else ""
            raise AuthenticationError(f"The identity provider refused the sign-in{shown}.")
        code = params.get("code")
        if not code:
            raise AuthenticationError("The sign-in response carries no authorization code.")
        return code

    async def _discover(self, http: httpx2.AsyncClient) -> _Provider:
        if self._provider is None:
            url = self._s.issuer.rstrip("/") + "/.well-known/openid-configuration"
            self._provider = self._read_discovery(await _get_json(http, url))
        return self._provider

    def _read_discovery(self, document: dict[str, Any]) -> _Provider:
        if document.get("issuer") != self._s.issuer:
            raise AuthenticationError("The identity provider's discovery document names another issuer.")
        endpoints = [document.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
        challenges = document.get("code_challenge_methods_supported", ["S256"])
        if not all(_is_safe_url(url) for url in endpoints) or "S256" not in challenges:
            raise DependencyUnavailableError(_UNUSABLE)
        methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        if self._s.client_secret is None:
            client_auth = "none"
        elif "client_secret_basic" in methods:
            client_auth = "client_secret_basic"
        elif "client_secret_post" in methods:
            client_auth = "client_secret_post"
        else:
            raise DependencyUnavailableError(_UNUSABLE)
        return _Provider(
            authorization_endpoint=str(endpoints[0]),
            token_endpoint=str(endpoints[1]),
            jwks_uri=str(endpoints[2]),
            client_auth=client_auth,
            sends_issuer=document.get("authorization_response_iss_parameter_supported") is True,
        )

    async def _exchange(self, http: httpx2.AsyncClient, provider: _Provider, code: str, verifier: str) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._s.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        secret = self._s.client_secret or ""
        if provider.client_auth == "client_secret_basic":
            # RFC 6749 2.3.1: both parts are form-encoded before the Basic encoding.
            pair = f"{quote(self._s.client_id, safe='')}:{quote(secret, safe='')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form["client_id"] = self._s.client_id
            if provider.client_auth == "client_secret_post":
                form["client_secret"] = secret
        try:
            response = await http.post(provider.token_endpoint, data=form, headers=headers)
        except httpx2.HTTPError as exc:
            raise DependencyUnavailableError(_UNREACHABLE) from exc
        if response.status_code >= 500:
            raise DependencyUnavailableError(_UNREACHABLE)
        if response.status_code != 200:
            raise AuthenticationError("The identity provider refused the authorization code.")
        id_token = _json_object(response).get("id_token")
        if not isinstance(id_token, str):
            raise AuthenticationError("The identity provider returned no ID token.")
        return id_token

    async def _verify(
        self, http: httpx2.AsyncClient, provider: _Provider, id_token: str, nonce: str
    ) -> dict[str, Any]:
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError) as exc:
            raise AuthenticationError("The identity provider's ID token is malformed.") from exc
        alg = header.get("alg")
        if alg not in self._s.allowed_algorithms:
            raise AuthenticationError(
                "The identity provider's ID token uses an algorithm that is not allowed."
            )
        key = await self._key_for(http, provider, str(alg), header.get("kid"))
        claims = _verified_claims(id_token, key, str(alg))
        self._check_claims(claims, nonce)
        return claims

    async def _key_for(self, http: httpx2.AsyncClient, provider: _Provider, alg: str, kid: object) -> Key:
        fetched = self._keys is None
        if self._keys is None:
            self._keys = await _fetch_keys(http, provider.jwks_uri)
        key = _pick_key(self._keys, alg, kid)
        if key is None and not fetched:
            # An unknown kid usually means the provider rotated its keys: refetch once.
            self._keys = await _fetch_keys(http, provider.jwks_uri)
            key = _pick_key(self._keys, alg, kid)
        if key is None:
            raise AuthenticationError("The identity provider's ID token is signed by an unknown key.")
        return key

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        registry = jwt.JWTClaimsRegistry(
            leeway=int(self._s.leeway_s),
            iss={"essential": True, "value": self._s.issuer},
            aud={"essential": True, "value": self._s.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise AuthenticationError("The identity provider's ID token has expired.") from exc
        except ClaimError as exc:
            raise AuthenticationError(_claim_reason(exc.claim)) from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self._s.client_id:
            raise AuthenticationError("The identity provider's ID token was issued to another client.")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise AuthenticationError("The identity provider's ID token does not belong to this sign-in.")

    def _identity(self, claims: Mapping[str, Any]) -> ExternalIdentity:
        subject = str(claims["sub"])
        username = next(
            (v for v in (claims.get("preferred_username"), claims.get("email")) if isinstance(v, str) and v),
            subject,
        )
        values = _strings(_lookup(claims, self._s.roles_claim))
        roles = {self._s.role_map[v] for v in values if v in self._s.role_map}
        if self._s.claims_as_roles:
            roles.update(values)
        attributes = {name: claims[name] for name in self._s.attributes if name in claims}
        return ExternalIdentity(
            source="oidc",
            subject=subject,
            username=username,
            roles=frozenset(roles),
            attributes=MappingProxyType(attributes),
        )


def _claim_reason(claim: str) -> str:
    reasons = {
        "iss": "The identity provider's ID token was issued by another issuer.",
        "aud": "The identity provider's ID token is meant for another client.",
        "nbf": "The identity provider's ID token is not valid yet.",
        "iat": "The identity provider's ID token is not valid yet.",
    }
    return reasons.get(claim, f"The identity provider's ID token lacks a valid '{claim}' claim.")


def _verified_claims(id_token: str, key: Key, alg: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519"; providers still send it.
            warnings.simplefilter("ignore", SecurityWarning)
            token = jwt.decode(id_token, key, algorithms=[alg])
    except BadSignatureError as exc:
        raise AuthenticationError("The identity provider's ID token signature is invalid.") from exc
    except (JoseError, ValueError) as exc:
        raise AuthenticationError("The identity provider's ID token is malformed.") from exc
    return token.claims


def _pick_key(keys: list[Key], alg: str, kid: object) -> Key | None:
    """The one signing key for `alg` named `kid` (or the only candidate when the token names none)."""
    key_type = _KEY_TYPES.get(alg[:2])
    candidates = [
        k
        for k in keys
        if k.key_type == key_type and k.get("use", "sig") == "sig" and k.get("alg", alg) == alg
    ]
    if kid is not None:
        candidates = [k for k in candidates if k.kid == kid]
    return candidates[0] if len(candidates) == 1 else None


async def _fetch_keys(http: httpx2.AsyncClient, url: str) -> list[Key]:
    document = await _get_json(http, url)
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise DependencyUnavailableError(_UNUSABLE)
    keys: list[Key] = []
    for entry in entries:
        try:
            keys.append(import_key(entry))
        except (JoseError, ValueError, TypeError, KeyError):
            continue  # a key of a type we do not use must not hide the others
    return keys


async def _get_json(http: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise DependencyUnavailableError(_UNREACHABLE) from exc
    if response.status_code != 200:
        raise DependencyUnavailableError(_UNREACHABLE)
    return _json_object(response)


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise DependencyUnavailableError(_UNUSABLE) from exc
    if not isinstance(body, dict):
        raise DependencyUnavailableError(_UNUSABLE)
    return body


def _lookup(claims: Mapping[str, Any], name: str) -> object:
    """A claim by exact name, else by dotted path into nested objects (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
