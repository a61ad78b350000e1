"""Text-message codes and hardware keys (WebAuthn, with a software authenticator), on every channel.

Each login starts on the channel's own route; the factor is enrolled during the first login and
answered on the next. The app's SMS sender is the development message sink, read by the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.e2e.conftest import StartAuthApp
from tests.e2e.identity import login, post

from nexus import Nexus, RunningNexus
from nexus.backends.auth.sms import MessageSink
from nexus.core.types import Channel
from nexus.enterprise.auth import MultiFactorAuth
from nexus.testing.clients import ChannelClient
from nexus.testing.webauthn import SoftAuthenticator

ClientFactory = Callable[..., ChannelClient]
PHONE = "+15551234567"


def _prefix(channel: Channel) -> str:
    return "/cli/v1" if channel is Channel.CLI else ""


@pytest.fixture
def factor_app(auth_app: StartAuthApp) -> Callable[..., Any]:
    async def start(methods: list[str], sink: MessageSink | None = None) -> RunningNexus:
        def setup(app: Nexus) -> None:
            app.auth.mfa = MultiFactorAuth(methods=methods, sms_sender=sink)

        return await auth_app(setup)

    return start


async def test_a_text_message_code_works_once_and_only_for_its_challenge(
    factor_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    sink = MessageSink()
    server = await factor_app(["sms"], sink)
    p = _prefix(channel)
    first = await login(server, channel, "alice")
    assert first.code == "mfa_enrollment_required", first.body
    challenge = first.body["challenge_id"]
    enrolled = await post(
        server, f"{p}/auth/mfa/enroll", {"challenge_id": challenge, "method": "sms", "phone": PHONE}
    )
    assert enrolled.status == 200, enrolled.body
    assert PHONE not in str(enrolled.body)  # only the masked number comes back
    activated = await post(
        server, f"{p}/auth/mfa/activate", {"challenge_id": challenge, "code": sink.last_code(PHONE)}
    )
    assert activated.status == 200, activated.body

    second = await login(server, channel, "alice")
    assert second.code == "mfa_required", second.body
    assert "sms" in second.body["methods"], second.body
    sent = await post(server, f"{p}/auth/mfa/sms", {"challenge_id": second.body["challenge_id"]})
    assert sent.status == 200, sent.body
    assert sent.body["sent_to"].endswith("67"), sent.body
    code = sink.last_code(PHONE)
    wrong = await post(
        server,
        f"{p}/auth/mfa",
        {"challenge_id": second.body["challenge_id"], "method": "sms", "code": "000000"},
    )
    assert wrong.status == 401
    # A wrong try spends the texted code: the right one no longer works until a new one is sent.
    spent = await post(
        server, f"{p}/auth/mfa", {"challenge_id": second.body["challenge_id"], "method": "sms", "code": code}
    )
    assert spent.status == 401
    await post(server, f"{p}/auth/mfa/sms", {"challenge_id": second.body["challenge_id"]})
    grant = await post(
        server,
        f"{p}/auth/mfa",
        {"challenge_id": second.body["challenge_id"], "method": "sms", "code": sink.last_code(PHONE)},
    )
    assert grant.status == 200, grant.body
    assert (await client(channel, server, grant.body["access_token"]).execute("add", {"a": 1, "b": 1})).ok


async def test_a_hardware_key_registers_answers_and_a_clone_is_refused(
    factor_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    server = await factor_app(["hardware_key", "totp"])
    origin = f"http://localhost:{server.api_port}"
    key = SoftAuthenticator()
    p = _prefix(channel)
    first = await login(server, channel, "alice")
    challenge = first.body["challenge_id"]
    enrolled = await post(
        server, f"{p}/auth/mfa/enroll", {"challenge_id": challenge, "method": "hardware_key"}
    )
    assert enrolled.status == 200, enrolled.body
    assert enrolled.body["options"]["rp"]["id"] == "localhost"
    created = key.create(enrolled.body["options"], origin)
    activated = await post(server, f"{p}/auth/mfa/activate", {"challenge_id": challenge, "response": created})
    assert activated.status == 200, activated.body
    assert len(activated.body["recovery_codes"]) == 10

    clone = key.clone()
    second = await login(server, channel, "alice")
    assert "hardware_key" in second.body["methods"], second.body
    options = await post(server, f"{p}/auth/mfa/hardware-key", {"challenge_id": second.body["challenge_id"]})
    answer = key.get(options.body["options"], origin)
    grant = await post(
        server,
        f"{p}/auth/mfa",
        {"challenge_id": second.body["challenge_id"], "method": "hardware_key", "response": answer},
    )
    assert grant.status == 200, grant.body
    assert (await client(channel, server, grant.body["access_token"]).execute("add", {"a": 2, "b": 2})).ok

    third = await login(server, channel, "alice")
    options = await post(server, f"{p}/auth/mfa/hardware-key", {"challenge_id": third.body["challenge_id"]})
    stale = clone.get(options.body["options"], origin)  # a copy of the key, its counter behind
    refused = await post(
        server,
        f"{p}/auth/mfa",
        {"challenge_id": third.body["challenge_id"], "method": "hardware_key", "response": stale},
    )
    assert refused.status == 401, refused.body
    records = await server.app.audit_log(workflow="_auth")
    assert any(r.error_code == "not_authenticated" and r.principal_id.startswith("local:") for r in records)
