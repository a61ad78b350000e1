"""A real SAML 2.0 identity provider (pysaml2 `Server`) for the SAML tests, run as its own process.

`python saml_idp.py --port N --key K --cert C --rogue-key RK --rogue-cert RC` serves on 127.0.0.1:
`GET /metadata` and `GET /saml` (its metadata), `POST /sp` (register a service provider's metadata,
as an IdP admin would) and `GET /sso` (HTTP-Redirect AuthnRequest in, auto-POST form with a signed
assertion out).
There is no login page: the query parameter `user` picks who signs in. Test hooks in the same query
change the answer before it is signed: `sign` (assertion, response, both, none), `signer` (idp, rogue),
`alg` (sha256, sha1), `audience`, `recipient`, `destination`, `shift_s` (move every timestamp) and
`unsolicited=1` (drop InResponseTo). `--base-url`, `--tls-cert`/`--tls-key` and
`--allow-unsigned-requests` serve it as a named HTTPS IdP (the production block's sso.company.com).
Imports pysaml2 and Starlette only, never Nexus.
"""

from __future__ import annotations

import argparse
import calendar
import time
import warnings
from collections.abc import Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():
    # pysaml2's IdP module imports a cipher mode that cryptography now flags as moved.
    warnings.filterwarnings("ignore", message="CFB has been moved")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, class_name, samlp
    from saml2.config import IdPConfig
    from saml2.md import entity_descriptor_from_string
    from saml2.metadata import create_metadata_string
    from saml2.response import IncorrectlySigned
    from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
    from saml2.server import Server
    from saml2.sigver import pre_signature_part, security_context, signed_instance_factory
    from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

USERS: dict[str, dict[str, list[str]]] = {
    "alice": {
        "uid": ["alice"],
        "mail": ["alice@example.org"],
        "displayName": ["Alice Liddell"],
        "groups": ["admins", "developers"],
    },
    "bob": {
        "uid": ["bob"],
        "mail": ["bob@example.org"],
        "displayName": ["Bob Builder"],
        "groups": ["developers"],
    },
}
ALGORITHMS = {"sha256": (SIG_RSA_SHA256, DIGEST_SHA256), "sha1": (SIG_RSA_SHA1, DIGEST_SHA1)}
PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def _config(
    base_url: str, key_file: str, cert_file: str, xmlsec: str, *, signed_requests: bool = True
) -> IdPConfig:
    config = IdPConfig()
    config.load(
        {
            "entityid": f"{base_url}/metadata",
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(f"{base_url}/sso", BINDING_HTTP_REDIRECT)]},
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    # Registered service providers publish a signing key; their requests must verify
                    # (unless started with --allow-unsigned-requests, as many IdPs are).
                    "want_authn_requests_signed": signed_requests,
                }
            },
            "key_file": key_file,
            "cert_file": cert_file,
            "xmlsec_binary": xmlsec,
            "metadata": {},
            "allow_unknown_attributes": True,
        }
    )
    return config


def _shift(stamp: str | None, seconds: int) -> str | None:
    if stamp is None:
        return None
    moved = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) + seconds
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moved))


def _shift_times(response: samlp.Response, seconds: int) -> None:
    response.issue_instant = _shift(response.issue_instant, seconds)
    assertion = response.assertion
    assertion.issue_instant = _shift(assertion.issue_instant, seconds)
    conditions = assertion.conditions
    conditions.not_before = _shift(conditions.not_before, seconds)
    conditions.not_on_or_after = _shift(conditions.not_on_or_after, seconds)
    for statement in assertion.authn_statement:
        statement.authn_instant = _shift(statement.authn_instant, seconds)
    for confirmation in assertion.subject.subject_confirmation:
        data = confirmation.subject_confirmation_data
        data.not_on_or_after = _shift(data.not_on_or_after, seconds)


def _apply_hooks(response: samlp.Response, hooks: Mapping[str, str]) -> None:
    """Change the unsigned response as the test asked; signing comes after."""
    assertion = response.assertion
    data = assertion.subject.subject_confirmation[0].subject_confirmation_data
    # The Web SSO profile wants a bearer NotOnOrAfter; pysaml2 leaves it out unless told.
    data.not_on_or_after = assertion.conditions.not_on_or_after
    if "audience" in hooks:
        assertion.conditions.audience_restriction[0].audience[0].text = hooks["audience"]
    if "recipient" in hooks:
        data.recipient = hooks["recipient"]
    if "destination" in hooks:
        response.destination = hooks["destination"]
    if hooks.get("unsolicited") == "1":
        response.in_response_to = None
        data.in_response_to = None
    if "shift_s" in hooks:
        _shift_times(response, int(hooks["shift_s"]))


class IdentityProvider:
    """The pysaml2 server plus a second signing context whose key the metadata does not list."""

    def __init__(self, args: argparse.Namespace) -> None:
        base_url = args.base_url or f"http://127.0.0.1:{args.port}"
        signed = not args.allow_unsigned_requests
        self.config = _config(base_url, args.key, args.cert, args.xmlsec, signed_requests=signed)
        self.server = Server(config=self.config)
        self.rogue = security_context(_config(base_url, args.rogue_key, args.rogue_cert, args.xmlsec))
        self.metadata = create_metadata_string(None, config=self.config)
        self.service_providers: dict[str, str] = {}

    def register(self, metadata: str) -> None:
        """Trust a service provider's metadata; registering an entity id again replaces it."""
        self.service_providers[entity_descriptor_from_string(metadata).entity_id] = metadata
        store = self.server.metadata
        store.metadata.clear()
        for document in self.service_providers.values():
            store.load("inline", document)

    def answer(self, query: Mapping[str, str]) -> str:
        """The auto-POST form carrying the response to the AuthnRequest in `query`."""
        parsed = self.server.parse_authn_request(
            query["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=query.get("RelayState"),
            sigalg=query.get("SigAlg"),
            signature=query.get("Signature"),
        )
        request = parsed.message
        sp_entity_id = request.issuer.text
        acs_url = self.server.response_args(request, [BINDING_HTTP_POST])["destination"]
        identity = USERS[query["user"]]
        response = self.server.create_authn_response(
            dict(identity),
            request.id,
            acs_url,
            sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=identity["mail"][0]),
            authn={"class_ref": PASSWORD_CONTEXT},
            sign_assertion=False,
            sign_response=False,
        )
        _apply_hooks(response, query)
        signed = self._sign(response, query)
        form = self.server.apply_binding(
            BINDING_HTTP_POST, signed, acs_url, query.get("RelayState", ""), response=True
        )
        return str(form["data"])

    def _sign(self, response: samlp.Response, hooks: Mapping[str, str]) -> str:
        sign_alg, digest_alg = ALGORITHMS[hooks.get("alg", "sha256")]
        context = self.rogue if hooks.get("signer") == "rogue" else self.server.sec
        mode = hooks.get("sign", "assertion")
        parts: list[tuple[str, str]] = []
        if mode in ("assertion", "both"):
            assertion = response.assertion
            assertion.signature = pre_signature_part(
                assertion.id, context.my_cert, 1, sign_alg=sign_alg, digest_alg=digest_alg
            )
            parts.append((class_name(assertion), assertion.id))
        if mode in ("response", "both"):
            response.signature = pre_signature_part(
                response.id, context.my_cert, 2, sign_alg=sign_alg, digest_alg=digest_alg
            )
            parts.append((class_name(response), response.id))
        if not parts:
            return str(response)
        return str(signed_instance_factory(response, context, parts))


def build_app(idp: IdentityProvider) -> Starlette:
    async def metadata(request: Request) -> Response:
        return Response(idp.metadata, media_type="application/samlmetadata+xml")

    async def register(request: Request) -> Response:
        idp.register((await request.body()).decode("utf-8"))
        return Response(status_code=204)

    def sso(request: Request) -> Response:
        query = dict(request.query_params)
        if query.get("user") not in USERS or "SAMLRequest" not in query:
            return PlainTextResponse("unknown user or no SAMLRequest", status_code=400)
        try:
            return HTMLResponse(idp.answer(query))
        except IncorrectlySigned:
            return PlainTextResponse("the AuthnRequest signature does not verify", status_code=403)

    async def sso_endpoint(request: Request) -> Response:
        # pysaml2 is blocking (xmlsec1 subprocesses); keep it off this server's event loop.
        return await run_in_threadpool(sso, request)

    return Starlette(
        routes=[
            Route("/metadata", metadata),
            Route("/saml", metadata),  # where the source document's production block looks for it
            Route("/sp", register, methods=["POST"]),
            Route("/sso", sso_endpoint),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    for name in ("key", "cert", "rogue-key", "rogue-cert"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--xmlsec", default="/usr/bin/xmlsec1")
    parser.add_argument("--base-url", default=None, help="the URL it is known by (https://sso.company.com)")
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--allow-unsigned-requests", action="store_true")
    args: Any = parser.parse_args(argv)
    app = build_app(IdentityProvider(args))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )


if __name__ == "__main__":
    main()
