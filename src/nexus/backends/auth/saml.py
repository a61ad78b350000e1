"""SAML 2.0 single sign-on as a service provider (pysaml2 + xmlsec1): the `SsoProtocol` named "saml".

Owns the AuthnRequest (HTTP-Redirect), every check on the response posted to the assertion consumer
service, and the SP metadata. pysaml2 verifies signatures through xmlsec1 subprocesses, so its calls
run in a worker thread. Imports pysaml2, httpx2, core auth contracts and errors; no channel code.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import httpx2

# pysaml2 ships no type information; its objects are `Any` at this boundary only.
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT  # type: ignore[import-untyped]
from saml2 import xmldsig as ds
from saml2.client import Saml2Client  # type: ignore[import-untyped]
from saml2.config import SPConfig  # type: ignore[import-untyped]
from saml2.metadata import entity_descriptor  # type: ignore[import-untyped]
from saml2.response import IncorrectlySigned, StatusError, UnsolicitedResponse  # type: ignore[import-untyped]
from saml2.saml import SCM_BEARER  # type: ignore[import-untyped]
from saml2.sigver import SigverError  # type: ignore[import-untyped]
from saml2.time_util import str_to_time  # type: ignore[import-untyped]
from saml2.validate import ResponseLifetimeExceed, ToEarly  # type: ignore[import-untyped]

from nexus.core.auth.model import ExternalIdentity
from nexus.core.auth.ports import EphemeralStore, SsoRedirect
from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock
from nexus.errors import AuthenticationError, ConfigurationError, InvalidInputError

REQUEST_KEY_PREFIX: Final = "saml:request:"
"""EphemeralStore namespace of pending AuthnRequests (request id -> return_to)."""
ASSERTION_KEY_PREFIX: Final = "saml:assertion:"
"""EphemeralStore namespace of consumed assertion ids (replay markers)."""

NO_RESPONSE: Final = "The sign-in response is missing or too large."
UNSOLICITED: Final = "The sign-in response answers no pending sign-in request."
BAD_SIGNATURE: Final = "The sign-in assertion is not signed by the identity provider."
WEAK_SIGNATURE: Final = "The sign-in assertion is signed with an algorithm that is not accepted."
EXPIRED: Final = "The sign-in assertion has expired or is not yet valid."
WRONG_AUDIENCE: Final = "The sign-in assertion is meant for another service."
WRONG_RECIPIENT: Final = "The sign-in response was addressed to another service."
WRONG_ISSUER: Final = "The sign-in assertion comes from an unknown identity provider."
REPLAYED: Final = "The sign-in assertion was already used."
REFUSED: Final = "The identity provider did not sign the user in."
INVALID: Final = "The sign-in response is invalid."

ACCEPTED_SIGNATURES: Final = frozenset(
    {ds.SIG_RSA_SHA256, ds.SIG_RSA_SHA384, ds.SIG_RSA_SHA512}
    | {ds.SIG_ECDSA_SHA256, ds.SIG_ECDSA_SHA384, ds.SIG_ECDSA_SHA512}
)
ACCEPTED_DIGESTS: Final = frozenset({ds.DIGEST_SHA256, ds.DIGEST_SHA384, ds.DIGEST_SHA512})
# A browser-posted response is a few kilobytes; far larger ones are refused before any parsing.
MAX_RESPONSE_CHARS: Final = 256 * 1024
MAX_RELAY_STATE_CHARS: Final = 80
MAX_RETURN_TO_CHARS: Final = 2048

_SYSTEM_CLOCK: Final = SystemClock()
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_log = logging.getLogger("nexus.backends.auth.saml")


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@dataclass(frozen=True, slots=True)
class SamlSettings:
    """How Nexus acts as a SAML 2.0 service provider towards one identity provider."""

    entity_id: str
    """This service's entity id; assertions must name it as their audience."""
    acs_url: str
    """The assertion consumer service URL (HTTP-POST); responses must be addressed to it."""
    idp_metadata: str
    """The IdP's metadata: the XML itself, a file path, or a URL read once (http only on loopback)."""
    sp_cert_file: Path | None = None
    """Certificate published in the SP metadata for AuthnRequest signatures (with `sp_key_file`)."""
    sp_key_file: Path | None = None
    """Private key signing AuthnRequests (RSA-SHA256); without one, requests go unsigned."""
    name_id_format: str | None = None
    """NameID format asked of the IdP (a `urn:...:nameid-format:*` URI); None lets the IdP choose."""
    roles_attribute: str = "groups"
    """The attribute whose values are mapped to roles."""
    role_map: Mapping[str, str] = field(default_factory=dict)
    """Group -> role. Empty: every group is a role of the same name; else unmapped groups give none."""
    attributes: tuple[str, ...] = ()
    """Attributes copied into the identity (ABAC reads them); empty copies every released one."""
    request_ttl_s: float = 600.0
    """How long a begun sign-in waits for its response."""
    clock_skew_s: float = 60.0
    """Tolerance for the IdP's clock on NotBefore / NotOnOrAfter."""
    xmlsec_binary: str = "/usr/bin/xmlsec1"
    """The xmlsec1 program; when it is not there, `xmlsec1` on PATH."""
    metadata_timeout_s: float = 10.0
    """Timeout for fetching `idp_metadata` from a URL."""

    def __post_init__(self) -> None:
        checks = (
            ("entity_id", _text(self.entity_id) and self.entity_id.strip() == self.entity_id, "a URI"),
            ("acs_url", _is_http_url(self.acs_url), "an absolute http(s) URL"),
            ("idp_metadata", _metadata_source_ok(self.idp_metadata), "XML, a file path or an https URL"),
            ("sp_key_file", (self.sp_cert_file is None) == (self.sp_key_file is None), "set with the cert"),
            ("name_id_format", self.name_id_format is None or _urn(self.name_id_format), "a urn: URI"),
            ("roles_attribute", _text(self.roles_attribute), "an attribute name"),
            ("role_map", _str_mapping(self.role_map), "a mapping of group names to role names"),
            ("attributes", _str_tuple(self.attributes), "a tuple of attribute names"),
            ("request_ttl_s", _seconds(self.request_ttl_s, 1e-3, 86_400), "0 < seconds <= 86400"),
            ("clock_skew_s", _seconds(self.clock_skew_s, 0, 600), "0 <= seconds <= 600"),
            ("metadata_timeout_s", _seconds(self.metadata_timeout_s, 1e-3, 300), "0 < seconds <= 300"),
            ("xmlsec_binary", _text(self.xmlsec_binary), "a program path"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigurationError(f"SamlSettings.{name} must be {expected}.")
        object.__setattr__(self, "role_map", MappingProxyType(dict(self.role_map)))


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _urn(value: object) -> bool:
    return isinstance(value, str) and value.startswith("urn:")


def _str_mapping(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _str_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(item, str) for item in value)


def _metadata_source_ok(value: object) -> bool:
    if not _text(value):
        return False
    source = str(value).strip()
    # Plain HTTP would let anyone on the path swap the IdP's signing key; only loopback may use it.
    return not source.startswith("http://") or urlsplit(source).hostname in _LOOPBACK


def _seconds(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


class _NoIdentityCache:
    """pysaml2 remembers every signed-in subject forever; Nexus keeps identities in its sessions."""

    def set(self, *args: object) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a checked assertion vouches for, and until when its id must be remembered."""

    assertion_id: str
    name_id: str
    attributes: Mapping[str, list[str]]
    remember_s: float


class SamlServiceProvider:
    """The "saml" `SsoProtocol` for one identity provider; only signed assertions are accepted.

    The assertion itself must carry a valid signature by a key in the IdP metadata, even when the
    whole response is signed too: the audience, recipient, time and InResponseTo checks all read
    the assertion, and one rule for one element leaves no room for signature-wrapping tricks
    between a signed envelope and an unsigned payload. A response signature is verified when present.
    """

    name: str = "saml"

    def __init__(
        self, settings: SamlSettings, ephemeral: EphemeralStore, *, clock: Clock = _SYSTEM_CLOCK
    ) -> None:
        """Read the IdP metadata and set up pysaml2; blocking (files, network, xmlsec1), see `open`.

        Raises:
            ConfigurationError: the metadata cannot be read or names no single IdP, a key is unreadable,
                or xmlsec1 cannot be found.
        """
        self._settings = settings
        self._ephemeral = ephemeral
        self._clock = clock
        self._signs_requests = settings.sp_key_file is not None
        # pysaml2 logs whole assertions (bearer credentials) at DEBUG and subjects at INFO.
        saml2_log = logging.getLogger("saml2")
        if saml2_log.getEffectiveLevel() < logging.WARNING:
            saml2_log.setLevel(logging.WARNING)
        config = _sp_config(settings, _xmlsec(settings.xmlsec_binary), _read_idp_metadata(settings))
        try:
            self._client = Saml2Client(config, identity_cache=_NoIdentityCache())
        except Exception as exc:  # key and certificate problems surface here, in many types
            raise ConfigurationError("The SAML service provider key or certificate cannot be used.") from exc
        self._idp = _single_idp(self._client)
        descriptor = entity_descriptor(config)
        # pysaml2 adds every algorithm xmlsec1 knows (MD5, SHA-1 included); we advertise none.
        descriptor.extensions = None
        self._metadata = str(descriptor)

    @classmethod
    async def open(
        cls, settings: SamlSettings, ephemeral: EphemeralStore, *, clock: Clock = _SYSTEM_CLOCK
    ) -> Self:
        """Construct off the event loop."""
        return await asyncio.to_thread(cls, settings, ephemeral, clock=clock)

    def metadata(self) -> str:
        """This service provider's metadata document, for the IdP's administrator."""
        return self._metadata

    async def begin(self, *, return_to: str) -> SsoRedirect:
        """An AuthnRequest URL at the IdP; the request id is the RelayState and the `state` returned."""
        if not isinstance(return_to, str) or len(return_to) > MAX_RETURN_TO_CHARS:
            raise InvalidInputError("The sign-in return address is invalid.")
        request_id = "_" + secrets.token_hex(20)
        url = await asyncio.to_thread(self._request_url, request_id)
        await self._ephemeral.put(REQUEST_KEY_PREFIX + request_id, return_to, self._settings.request_ttl_s)
        return SsoRedirect(url=url, state=request_id)

    async def complete(self, params: Mapping[str, str]) -> tuple[ExternalIdentity, str]:
        """Check the ACS form (`SAMLResponse`, `RelayState`); the identity and the `return_to` of `begin`."""
        saml_response = params.get("SAMLResponse") or ""
        relay_state = params.get("RelayState") or ""
        if not saml_response or len(saml_response) > MAX_RESPONSE_CHARS:
            raise _refuse(NO_RESPONSE)
        if not relay_state or len(relay_state) > MAX_RELAY_STATE_CHARS:
            raise _refuse(UNSOLICITED)
        # Taken before any checking: a request is answered at most once, whatever the outcome.
        return_to = await self._ephemeral.take(REQUEST_KEY_PREFIX + relay_state)
        if return_to is None:
            raise _refuse(UNSOLICITED)
        verified = await asyncio.to_thread(self._verify, saml_response, relay_state, return_to)
        if not await self._ephemeral.claim(ASSERTION_KEY_PREFIX + verified.assertion_id, verified.remember_s):
            raise _refuse(REPLAYED)
        return self._identity(verified), return_to

    def _request_url(self, request_id: str) -> str:
        request_id_out, info = self._client.prepare_for_authenticate(
            entityid=self._idp,
            relay_state=request_id,
            binding=BINDING_HTTP_REDIRECT,
            nameid_format=self._settings.name_id_format,
            sign=self._signs_requests,
            sigalg=ds.SIG_RSA_SHA256 if self._signs_requests else None,
            message_id=request_id,
        )
        if request_id_out != request_id:
            raise ConfigurationError("pysaml2 did not use the AuthnRequest id it was given.")
        return str(dict(info["headers"])["Location"])

    def _verify(self, saml_response: str, request_id: str, return_to: str) -> _Verified:
        """pysaml2's checks, then ours on what it returns. Runs in a worker thread."""
        refusal: tuple[str, str] | None = None
        try:
            response = self._client.parse_authn_request_response(
                saml_response,
                BINDING_HTTP_POST,
                outstanding={request_id: return_to},
                # Without conversation info pysaml2 skips the Recipient check entirely.
                conv_info={"entity_id": self._settings.acs_url},
            )
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises bare Exception for several checks
            refusal = (_reason_for(exc), type(exc).__name__)
        if refusal is not None:
            # Raised outside the handler, unchained: pysaml2's messages can quote the whole document.
            raise _refuse(*refusal)
        if response is None or response.response is None:
            raise _refuse(INVALID)
        # pysaml2 answers a wrong Destination with a response stripped of its assertion.
        if response.response.destination != self._settings.acs_url:
            raise _refuse(WRONG_RECIPIENT)
        if response.assertion is None or len(response.assertions) != 1:
            raise _refuse(INVALID)
        return self._check(response, request_id)

    def _check(self, response: Any, request_id: str) -> _Verified:
        settings = self._settings
        message, assertion = response.response, response.assertion
        if message.in_response_to != request_id:
            raise _refuse(UNSOLICITED)
        issuers = [assertion.issuer] + ([message.issuer] if message.issuer is not None else [])
        if any(issuer is None or (issuer.text or "").strip() != self._idp for issuer in issuers):
            raise _refuse(WRONG_ISSUER)
        _check_signature(assertion)
        now = self._clock.now().timestamp()
        skew = settings.clock_skew_s
        conditions = assertion.conditions
        if conditions is None or not conditions.not_on_or_after:
            raise _refuse(INVALID)
        if not _audience_ok(conditions, settings.entity_id):
            raise _refuse(WRONG_AUDIENCE)
        valid_until = _epoch(conditions.not_on_or_after)
        if now >= valid_until + skew or (
            conditions.not_before and now + skew < _epoch(conditions.not_before)
        ):
            raise _refuse(EXPIRED)
        deliver_until = self._bearer_deadline(assertion.subject, request_id)
        if now >= deliver_until + skew:
            raise _refuse(EXPIRED)
        name_id = response.name_id
        if name_id is None or not (name_id.text or "").strip():
            raise _refuse(INVALID)
        attributes = {str(key): [str(v) for v in values] for key, values in (response.ava or {}).items()}
        remember_s = max(1.0, min(valid_until, deliver_until) + skew - now)
        return _Verified(str(assertion.id), name_id.text.strip(), attributes, remember_s)

    def _bearer_deadline(self, subject: Any, request_id: str) -> float:
        """The latest NotOnOrAfter of a bearer confirmation addressed to us for this request."""
        deadlines = [
            _epoch(data.not_on_or_after)
            for confirmation in (subject.subject_confirmation if subject is not None else [])
            if confirmation.method == SCM_BEARER
            and (data := confirmation.subject_confirmation_data) is not None
            and data.recipient == self._settings.acs_url
            and data.in_response_to == request_id
            and data.not_on_or_after
        ]
        if not deadlines:
            raise _refuse(WRONG_RECIPIENT)
        return max(deadlines)

    def _identity(self, verified: _Verified) -> ExternalIdentity:
        settings = self._settings
        groups = verified.attributes.get(settings.roles_attribute, [])
        if settings.role_map:
            roles = frozenset(settings.role_map[group] for group in groups if group in settings.role_map)
        else:
            roles = frozenset(groups)
        wanted = settings.attributes
        attributes = {
            name: values[0] if len(values) == 1 else tuple(values)
            for name, values in verified.attributes.items()
            if not wanted or name in wanted
        }
        uid = verified.attributes.get("uid") or [verified.name_id]
        return ExternalIdentity(
            source="saml",
            subject=verified.name_id,
            username=uid[0],
            roles=roles,
            attributes=MappingProxyType(attributes),
        )


def _refuse(reason: str, cause: str = "") -> AuthenticationError:
    _log.info("SAML sign-in refused: %s %s", reason, cause)
    return AuthenticationError(reason)


def _reason_for(exc: Exception) -> str:
    if isinstance(exc, UnsolicitedResponse):
        return UNSOLICITED
    if isinstance(exc, StatusError):
        return REFUSED
    if isinstance(exc, ResponseLifetimeExceed | ToEarly):
        return EXPIRED
    if isinstance(exc, SigverError | IncorrectlySigned):
        return BAD_SIGNATURE
    # These two arrive as bare exceptions; their text picks only the reason shown.
    text = str(exc)
    if "AudienceRestrictions" in text:
        return WRONG_AUDIENCE
    if "recipient" in text:
        return WRONG_RECIPIENT
    return INVALID


def _check_signature(assertion: Any) -> None:
    """pysaml2 verified the signature; this pins it to the assertion and to strong algorithms."""
    signature = assertion.signature
    if signature is None or signature.signed_info is None:
        raise _refuse(BAD_SIGNATURE)
    signed_info = signature.signed_info
    references = signed_info.reference or []
    if len(references) != 1 or references[0].uri != f"#{assertion.id}":
        raise _refuse(BAD_SIGNATURE)
    digest = references[0].digest_method
    if (
        signed_info.signature_method is None
        or signed_info.signature_method.algorithm not in ACCEPTED_SIGNATURES
        or digest is None
        or digest.algorithm not in ACCEPTED_DIGESTS
    ):
        raise _refuse(WEAK_SIGNATURE)


def _audience_ok(conditions: Any, entity_id: str) -> bool:
    """Every AudienceRestriction (at least one) names us; an assertion without one is for anybody."""
    restrictions = conditions.audience_restriction or []
    return bool(restrictions) and all(
        any((audience.text or "").strip() == entity_id for audience in restriction.audience or [])
        for restriction in restrictions
    )


def _epoch(stamp: str) -> float:
    return float(calendar.timegm(str_to_time(stamp)))


def _xmlsec(configured: str) -> str:
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    found = shutil.which("xmlsec1")
    if found is None:
        raise ConfigurationError(f"xmlsec1 was not found at {configured} nor on PATH; SAML needs it.")
    return found


def _read_idp_metadata(settings: SamlSettings) -> str:
    source = settings.idp_metadata.strip()
    if source.startswith("<"):
        return source
    if source.startswith(("https://", "http://")):
        try:
            response = httpx2.get(source, timeout=settings.metadata_timeout_s, follow_redirects=False)
            response.raise_for_status()
        except httpx2.HTTPError as exc:
            raise ConfigurationError("The SAML identity provider metadata URL could not be read.") from exc
        return str(response.text)
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"The SAML identity provider metadata file {source} cannot be read."
        ) from exc


def _sp_config(settings: SamlSettings, xmlsec: str, idp_metadata: str) -> Any:
    sp: dict[str, Any] = {
        "endpoints": {"assertion_consumer_service": [(settings.acs_url, BINDING_HTTP_POST)]},
        "want_assertions_signed": True,
        "want_response_signed": False,
        "allow_unsolicited": False,
        "authn_requests_signed": settings.sp_key_file is not None,
    }
    options: dict[str, Any] = {
        "entityid": settings.entity_id,
        "xmlsec_binary": xmlsec,
        "metadata": {"inline": [idp_metadata]},
        "accepted_time_diff": round(settings.clock_skew_s),
        "allow_unknown_attributes": True,
        "signing_algorithm": ds.SIG_RSA_SHA256,
        "digest_algorithm": ds.DIGEST_SHA256,
        "service": {"sp": sp},
    }
    if settings.name_id_format is not None:
        options["name_id_format"] = [settings.name_id_format]
    if settings.sp_key_file is not None and settings.sp_cert_file is not None:
        for option, name, path in (
            ("key_file", "sp_key_file", settings.sp_key_file),
            ("cert_file", "sp_cert_file", settings.sp_cert_file),
        ):
            if not os.access(path, os.R_OK):
                raise ConfigurationError(f"SamlSettings.{name} ({path}) cannot be read.")
            options[option] = str(path)
    config = SPConfig()
    try:
        config.load(options)
    except Exception as exc:  # pysaml2 raises many unrelated types for bad metadata
        raise ConfigurationError("The SAML identity provider metadata is not valid SAML metadata.") from exc
    return config


def _single_idp(client: Any) -> str:
    """The one IdP of the metadata, with a Redirect SSO endpoint and a signing key."""
    idps = list(client.metadata.identity_providers())
    if len(idps) != 1:
        raise ConfigurationError("The SAML metadata must describe exactly one identity provider.")
    idp = str(idps[0])
    if not client.metadata.single_sign_on_service(idp, BINDING_HTTP_REDIRECT):
        raise ConfigurationError("The SAML identity provider offers no HTTP-Redirect sign-on endpoint.")
    if not client.metadata.certs(idp, "idpsso", "signing"):
        raise ConfigurationError("The SAML identity provider metadata lists no signing certificate.")
    return idp
