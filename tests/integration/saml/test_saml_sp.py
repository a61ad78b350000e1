"""The SAML service provider against a real pysaml2 identity provider process and real xmlsec1.

Each sign-in goes browser-style: `begin` gives the IdP URL, the IdP answers with its auto-POST form,
and the form's fields go to `complete`. IdP query hooks (see `tests/support/saml_idp.py`) make the
faulty answers; tampering happens on the signed XML, as an attacker in the browser would do it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import defusedxml.ElementTree as SafeET
import httpx2
import pytest
from tests.support.saml import KeyPair, SamlIdp

from nexus.backends.auth import saml
from nexus.backends.auth.saml import SamlServiceProvider, SamlSettings
from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock
from nexus.errors import AuthenticationError, ConfigurationError
from nexus.testing.clock import FakeClock

SP_ENTITY_ID = "https://nexus.example.test/saml/metadata"
ACS_URL = "https://nexus.example.test/auth/saml/acs"
ROLE_MAP = {"admins": "admin", "developers": "developer"}
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
FORM_FIELD = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"/>')

# pysaml2 leaves the certificate files it hands to xmlsec1 for the garbage collector to close.
pytestmark = pytest.mark.filterwarnings(r"ignore:unclosed file <_io\.\w+ name='[^']*\.pem':ResourceWarning")

MakeSp = Callable[..., Awaitable[SamlServiceProvider]]


@pytest.fixture
async def ephemeral() -> AsyncIterator[MemoryEphemeralStore]:
    store = MemoryEphemeralStore()
    yield store
    await store.close()


@pytest.fixture
async def idp_http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def settings(saml_idp: SamlIdp, saml_sp_keys: KeyPair) -> SamlSettings:
    return SamlSettings(
        entity_id=SP_ENTITY_ID,
        acs_url=ACS_URL,
        idp_metadata=saml_idp.metadata_url,
        sp_cert_file=saml_sp_keys.cert_file,
        sp_key_file=saml_sp_keys.key_file,
        role_map=ROLE_MAP,
    )


@pytest.fixture
def make_sp(settings: SamlSettings, saml_idp: SamlIdp, ephemeral: MemoryEphemeralStore) -> MakeSp:
    """Build a service provider (settings overridable) and register its metadata at the IdP."""

    async def make(clock: Clock | None = None, **overrides: Any) -> SamlServiceProvider:
        changed = dataclasses.replace(settings, **overrides)
        sp = await SamlServiceProvider.open(changed, ephemeral, clock=clock or SystemClock())
        await asyncio.to_thread(saml_idp.register_sp, sp.metadata())
        return sp

    return make


@pytest.fixture
async def sp(make_sp: MakeSp) -> SamlServiceProvider:
    return await make_sp()


async def idp_answer(
    sp: SamlServiceProvider,
    http: httpx2.AsyncClient,
    *,
    user: str = "alice",
    return_to: str = "/home",
    **hooks: str,
) -> dict[str, str]:
    """Begin a sign-in and let the IdP answer it; the fields of its auto-POST form."""
    redirect = await sp.begin(return_to=return_to)
    response = await http.get(f"{redirect.url}&{urlencode({'user': user, **hooks})}")
    assert response.status_code == 200, response.text
    return {name: html.unescape(value) for name, value in FORM_FIELD.findall(response.text)}


def rewrite(form: dict[str, str], old: str, new: str) -> dict[str, str]:
    """The form with `old` replaced by `new` inside the signed XML, re-encoded."""
    xml = base64.b64decode(form["SAMLResponse"]).decode("utf-8")
    assert old in xml
    changed = base64.b64encode(xml.replace(old, new).encode("utf-8")).decode("ascii")
    return {**form, "SAMLResponse": changed}


async def refusal(sp: SamlServiceProvider, form: dict[str, str]) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await sp.complete(form)
    return caught.value.message


async def test_alice_signs_in_with_mapped_roles_attributes_and_return_to(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http, user="alice", return_to="/workflows?x=1")

    identity, return_to = await sp.complete(form)

    assert return_to == "/workflows?x=1"
    assert identity.source == "saml"
    assert identity.subject == "alice@example.org"
    assert identity.username == "alice"
    assert identity.roles == frozenset({"admin", "developer"})
    assert identity.attributes["mail"] == "alice@example.org"
    assert identity.attributes["displayName"] == "Alice Liddell"
    assert identity.attributes["groups"] == ("admins", "developers")


async def test_groups_become_roles_unmapped_and_attributes_are_limited_when_asked(
    make_sp: MakeSp, idp_http: httpx2.AsyncClient
) -> None:
    sp = await make_sp(role_map={}, attributes=("mail",))
    form = await idp_answer(sp, idp_http, user="bob")

    identity, _ = await sp.complete(form)

    assert identity.username == "bob"
    assert identity.roles == frozenset({"developers"})
    assert dict(identity.attributes) == {"mail": "bob@example.org"}


async def test_a_response_signed_as_a_whole_and_in_its_assertion_is_accepted(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http, user="bob", sign="both")

    identity, _ = await sp.complete(form)

    assert identity.subject == "bob@example.org"


async def test_begin_sends_a_signed_redirect_request_the_idp_verifies(
    sp: SamlServiceProvider, saml_idp: SamlIdp, idp_http: httpx2.AsyncClient
) -> None:
    redirect = await sp.begin(return_to="/home")
    url = urlsplit(redirect.url)
    query = {name: values[0] for name, values in parse_qs(url.query).items()}

    assert redirect.url.startswith(f"{saml_idp.base_url}/sso?")
    assert query["RelayState"] == redirect.state
    assert query["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    unsigned = {name: query[name] for name in ("SAMLRequest", "RelayState")}
    refused = await idp_http.get(f"{saml_idp.base_url}/sso", params={**unsigned, "user": "alice"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("user", "old", "new"),
    [
        pytest.param(
            "alice", ">alice@example.org</ns1:NameID>", ">mallory@example.org</ns1:NameID>", id="nameid"
        ),
        pytest.param(
            "bob", 'xsi:type="xs:string">developers<', 'xsi:type="xs:string">admins<', id="attribute"
        ),
    ],
)
async def test_an_assertion_changed_after_signing_is_refused(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient, user: str, old: str, new: str
) -> None:
    form = await idp_answer(sp, idp_http, user=user)

    assert await refusal(sp, rewrite(form, old, new)) == saml.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("hooks", "reason"),
    [
        pytest.param({"sign": "none"}, saml.BAD_SIGNATURE, id="unsigned"),
        pytest.param({"sign": "response"}, saml.BAD_SIGNATURE, id="unsigned-assertion-in-signed-response"),
        pytest.param({"signer": "rogue"}, saml.BAD_SIGNATURE, id="key-not-in-idp-metadata"),
        pytest.param({"alg": "sha1"}, saml.WEAK_SIGNATURE, id="rsa-sha1"),
        pytest.param({"audience": "https://other.example.test/sp"}, saml.WRONG_AUDIENCE, id="audience"),
        pytest.param({"recipient": "https://other.example.test/acs"}, saml.WRONG_RECIPIENT, id="recipient"),
        pytest.param(
            {"destination": "https://other.example.test/acs"}, saml.WRONG_RECIPIENT, id="destination"
        ),
        pytest.param({"shift_s": "-3600"}, saml.EXPIRED, id="expired"),
        pytest.param({"shift_s": "3600"}, saml.EXPIRED, id="not-yet-valid"),
        pytest.param({"unsolicited": "1"}, saml.UNSOLICITED, id="no-in-response-to"),
    ],
)
async def test_a_faulty_idp_answer_is_refused(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient, hooks: dict[str, str], reason: str
) -> None:
    form = await idp_answer(sp, idp_http, **hooks)

    assert await refusal(sp, form) == reason


async def test_an_assertion_past_its_lifetime_on_the_sp_clock_is_refused(
    make_sp: MakeSp, idp_http: httpx2.AsyncClient
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    sp = await make_sp(clock=clock, clock_skew_s=0)
    form = await idp_answer(sp, idp_http)
    clock.advance(timedelta(minutes=6).total_seconds())

    assert await refusal(sp, form) == saml.EXPIRED


async def test_a_replayed_response_is_refused(sp: SamlServiceProvider, idp_http: httpx2.AsyncClient) -> None:
    form = await idp_answer(sp, idp_http)
    await sp.complete(form)

    assert await refusal(sp, form) == saml.UNSOLICITED


async def test_of_two_concurrent_submissions_of_one_response_only_one_signs_in(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http)

    outcomes = await asyncio.gather(sp.complete(form), sp.complete(form), return_exceptions=True)

    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["AuthenticationError", "tuple"]


async def test_a_replayed_assertion_is_refused_even_if_its_request_were_pending_again(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient, ephemeral: MemoryEphemeralStore
) -> None:
    form = await idp_answer(sp, idp_http, return_to="/again")
    request_key = saml.REQUEST_KEY_PREFIX + form["RelayState"]
    await sp.complete(form)
    await ephemeral.put(request_key, "/again", 60)

    assert await refusal(sp, form) == saml.REPLAYED


async def test_a_response_without_relay_state_is_unsolicited(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http)

    assert await refusal(sp, {"SAMLResponse": form["SAMLResponse"]}) == saml.UNSOLICITED


async def test_a_response_cannot_answer_another_pending_request(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http)
    other = await sp.begin(return_to="/elsewhere")

    assert await refusal(sp, {**form, "RelayState": other.state}) == saml.UNSOLICITED


async def test_garbage_in_the_form_is_refused_without_detail(sp: SamlServiceProvider) -> None:
    pending = await sp.begin(return_to="/home")
    garbage = base64.b64encode(b"<not-saml/>").decode("ascii")

    assert await refusal(sp, {"SAMLResponse": garbage, "RelayState": pending.state}) == saml.INVALID
    assert await refusal(sp, {"RelayState": pending.state}) == saml.NO_RESPONSE


async def test_sp_metadata_describes_the_acs_the_signing_key_and_the_signature_policy(
    sp: SamlServiceProvider, saml_sp_keys: KeyPair
) -> None:
    root = SafeET.fromstring(sp.metadata())
    descriptor = root.find(f"{MD}SPSSODescriptor")
    acs = descriptor.find(f"{MD}AssertionConsumerService") if descriptor is not None else None
    cert = root.find(f".//{MD}KeyDescriptor[@use='signing']//{DS}X509Certificate")
    pem_body = "".join(saml_sp_keys.cert_file.read_text().splitlines()[1:-1])

    assert root.tag == f"{MD}EntityDescriptor"
    assert root.get("entityID") == SP_ENTITY_ID
    assert descriptor is not None
    assert descriptor.get("AuthnRequestsSigned") == "true"
    assert descriptor.get("WantAssertionsSigned") == "true"
    assert acs is not None
    assert acs.get("Location") == ACS_URL
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    assert cert is not None
    assert "".join((cert.text or "").split()) == pem_body
    assert root.find(f"{MD}Extensions") is None


@pytest.mark.parametrize(
    "idp_metadata",
    [
        pytest.param("/nonexistent/idp-metadata.xml", id="missing-file"),
        pytest.param("<EntityDescriptor>not metadata", id="broken-xml"),
        pytest.param("URL/nothing-here", id="url-404"),
    ],
)
async def test_unreadable_idp_metadata_is_a_configuration_error(
    make_sp: MakeSp, saml_idp: SamlIdp, idp_metadata: str
) -> None:
    with pytest.raises(ConfigurationError):
        await make_sp(idp_metadata=idp_metadata.replace("URL", saml_idp.base_url))


def test_metadata_file_is_read(settings: SamlSettings, saml_idp: SamlIdp, tmp_path: Path) -> None:
    path = tmp_path / "idp.xml"
    path.write_text(httpx2.get(saml_idp.metadata_url, timeout=10).text)
    provider = SamlServiceProvider(
        dataclasses.replace(settings, idp_metadata=str(path)), MemoryEphemeralStore()
    )

    assert provider.metadata().startswith("<")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"acs_url": "/relative/acs"}, id="relative-acs"),
        pytest.param({"idp_metadata": "http://idp.example.test/metadata"}, id="plain-http-metadata"),
        pytest.param({"sp_key_file": None}, id="cert-without-key"),
        pytest.param({"clock_skew_s": -1}, id="negative-skew"),
        pytest.param({"request_ttl_s": 0}, id="zero-ttl"),
        pytest.param({"role_map": {"admins": 1}}, id="role-map-values"),
    ],
)
def test_invalid_settings_are_refused(settings: SamlSettings, overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        dataclasses.replace(settings, **overrides)


async def test_a_forged_assertion_wrapped_around_a_signed_one_is_refused(
    sp: SamlServiceProvider, idp_http: httpx2.AsyncClient
) -> None:
    form = await idp_answer(sp, idp_http, user="bob")
    xml = base64.b64decode(form["SAMLResponse"]).decode("utf-8")
    start, end = xml.index("<ns1:Assertion "), xml.index("</ns1:Assertion>") + len("</ns1:Assertion>")
    signed = xml[start:end]
    forged = signed.replace(">bob@example.org</ns1:NameID>", ">alice@example.org</ns1:NameID>")
    issuer_end = xml.index("</ns1:Issuer>") + len("</ns1:Issuer>")
    # The signed original hides in Extensions; the forged copy keeps its ID and its Signature.
    wrapped = xml[:issuer_end] + f"<ns0:Extensions>{signed}</ns0:Extensions>" + xml[issuer_end:start] + forged
    wrapped += xml[end:]
    attack = {**form, "SAMLResponse": base64.b64encode(wrapped.encode("utf-8")).decode("ascii")}

    assert await refusal(sp, attack) == saml.BAD_SIGNATURE
