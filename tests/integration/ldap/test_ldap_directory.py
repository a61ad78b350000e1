"""`LdapDirectory` against the real OpenLDAP slapd: search-then-bind over plain LDAP, StartTLS and LDAPS.

Covers roles from groups, ABAC attributes, refusals that look alike (wrong password, unknown user,
empty password, filter injection), failures of the directory or of TLS, concurrency off the event
loop, the settings' validation, and the URL alone: an anonymous search under the directory's naming
context (or the URL's base) that never shows a password.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.support.ldap import (
    CONFINED_DN,
    CONFINED_PASSWORD,
    HOST,
    LDAP_PORT,
    LDAPS_PORT,
    PASSWORDS,
    READER_DN,
    READER_PASSWORD,
    ROLE_MAP,
    SUFFIX,
    LdapServer,
    user_dn,
)

from nexus.backends.auth.ldap import LdapDirectory, LdapSettings
from nexus.errors import ConfigurationError, DependencyUnavailableError


@pytest.fixture
async def directories() -> AsyncIterator[list[LdapDirectory]]:
    """Directories a test opens; each is closed afterwards."""
    opened: list[LdapDirectory] = []
    yield opened
    for directory in opened:
        await directory.close()


def _open(opened: list[LdapDirectory], settings: LdapSettings) -> LdapDirectory:
    directory = LdapDirectory(settings)
    opened.append(directory)
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a hung directory."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
async def relay_to_ldaps() -> AsyncIterator[str]:
    """An ldaps:// URL on 127.0.0.2 whose TCP bytes are relayed to the test slapd's LDAPS port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(HOST, LDAPS_PORT)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"ldaps://127.0.0.2:{port}"


@pytest.mark.parametrize("transport", ["plain", "starttls", "ldaps"])
async def test_alice_logs_in_with_roles_and_attributes_over_each_transport(
    ldap_server: LdapServer, directories: list[LdapDirectory], transport: str
) -> None:
    directory = _open(directories, ldap_server.settings(transport))

    identity = await directory.authenticate("alice", "alice-secret")

    assert identity is not None
    assert identity.source == "ldap"
    assert identity.subject == user_dn("alice")
    assert identity.username == "alice"
    assert identity.roles == {"admin", "developer"}
    assert dict(identity.attributes) == {
        "mail": "alice@nexus.test",
        "cn": "Alice Archer",
        "l": "US",
        "departmentNumber": "eng",
        "employeeType": "full-time",
        "groups": ("admins", "developers"),  # every group, mapped to a role or not
    }


async def test_each_user_gets_the_roles_of_their_mapped_groups_only(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings(group_role_map={"developers": "developer"}))

    roles = {uid: await directory.authenticate(uid, password) for uid, password in PASSWORDS.items()}

    assert {uid: identity.roles for uid, identity in roles.items() if identity is not None} == {
        "alice": {"developer"},
        "bob": {"developer"},
        "carol": set(),
        "dave": set(),
    }
    bob = roles["bob"]
    assert bob is not None
    assert bob.attributes["l"] == "EU"
    carol = roles["carol"]
    assert carol is not None
    assert carol.roles == set()
    assert "groups" in carol.attributes  # present even when no group maps to a role
    assert "employeeType" not in bob.attributes


async def test_groups_as_roles_uses_group_names_and_member_of_gives_the_same_roles(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    searched = _open(directories, ldap_server.settings(group_role_map={}, groups_as_roles=True))
    member_of = _open(
        directories,
        ldap_server.settings(group_role_map={}, groups_as_roles=True, member_of_attribute="memberOf"),
    )

    for directory in (searched, member_of):
        alice = await directory.authenticate("alice", "alice-secret")
        carol = await directory.authenticate("carol", "carol-secret")
        assert alice is not None
        assert carol is not None
        assert alice.roles == {"admins", "developers"}
        assert carol.roles == {"operators"}


async def test_a_multi_valued_attribute_is_kept_as_all_its_values(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings(attributes=("objectClass", "mail")))

    identity = await directory.authenticate("bob", "bob-secret")

    assert identity is not None
    assert identity.attributes["mail"] == "bob@nexus.test"
    assert "inetOrgPerson" in identity.attributes["objectClass"]
    assert len(identity.attributes["objectClass"]) > 1


async def test_dave_logs_in_with_a_password_full_of_filter_characters(ldap_directory: LdapDirectory) -> None:
    identity = await ldap_directory.authenticate("dave", "p(a)ss*\\word")

    assert identity is not None
    assert identity.subject == user_dn("dave")
    assert await ldap_directory.authenticate("dave", "p(a)ss*word") is None
    assert await ldap_directory.authenticate("dave", "*") is None


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong-secret"),
        ("alice", "ALICE-SECRET"),
        ("nobody", "alice-secret"),
        ("alice", ""),
        ("", "alice-secret"),
        ("alice", "\u00ad"),  # SASLprep maps it to nothing: an empty password in disguise
        ("bob", "alice-secret"),
    ],
    ids=["wrong", "case", "unknown", "empty-password", "empty-username", "maps-to-empty", "other-users"],
)
async def test_wrong_credentials_return_none(
    ldap_directory: LdapDirectory, username: str, password: str
) -> None:
    assert await ldap_directory.authenticate(username, password) is None


@pytest.mark.parametrize(
    "username",
    ["*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*)", "*)(uid=*))(|(uid=*", "alice\x00"],
)
async def test_filter_injection_in_the_username_finds_nobody(
    ldap_directory: LdapDirectory, username: str
) -> None:
    # alice's real password: an unescaped filter that matched her would log the attacker in.
    assert await ldap_directory.authenticate(username, "alice-secret") is None


async def test_a_filter_matching_several_users_logs_nobody_in(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    # "eng" is alice's and bob's department: two entries, so not even alice's password may pass.
    either = "(|(uid={username})(departmentNumber={username}))"
    directory = _open(directories, ldap_server.settings(user_filter=either))

    assert await directory.authenticate("eng", "alice-secret") is None
    assert await directory.authenticate("eng", "bob-secret") is None
    assert await directory.authenticate("carol", "carol-secret") is not None


@pytest.mark.parametrize("searcher", ["service-account", "anonymous"])
async def test_unknown_user_costs_the_same_binds_as_a_wrong_password(
    ldap_server: LdapServer, directories: list[LdapDirectory], searcher: str
) -> None:
    settings = ldap_server.settings() if searcher == "service-account" else LdapSettings(url=ldap_server.url)
    directory = _open(directories, settings)

    async def binds_during(username: str, password: str) -> int:
        before = await asyncio.to_thread(ldap_server.bind_count)
        assert await directory.authenticate(username, password) is None
        return await asyncio.to_thread(ldap_server.bind_count) - before - 1  # less the second read's bind

    wrong = await binds_during("alice", "wrong-secret")
    unknown = await binds_during("nobody", "wrong-secret")
    injected = await binds_during("*", "wrong-secret")
    empty = await binds_during("alice", "")

    assert wrong == 2  # the service account (or anonymous), then the user
    assert unknown == wrong
    assert injected == wrong
    assert empty == 0


async def test_unknown_user_and_wrong_password_take_similar_time(ldap_directory: LdapDirectory) -> None:
    async def elapsed(username: str) -> float:
        started = time.perf_counter()
        assert await ldap_directory.authenticate(username, "wrong-secret") is None
        return time.perf_counter() - started

    for _ in range(5):  # warm up the pool's threads
        await elapsed("alice")
    # Pairs taken back to back cancel out slow spells; skipping the decoy bind shows up as about 0.6.
    ratios = [await elapsed("nobody") / await elapsed("alice") for _ in range(41)]

    ratio = statistics.median(ratios)
    assert 0.8 < ratio < 1.25, f"unknown/wrong time ratio {ratio:.2f}"


async def test_an_unreachable_directory_is_unavailable_without_leaking_secrets(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings(url=f"ldap://127.0.0.1:{_free_port()}"))

    with pytest.raises(DependencyUnavailableError) as raised:
        await directory.authenticate("alice", "alice-secret")

    shown = str(raised.value) + repr(raised.value.to_problem())
    for secret in ("alice-secret", READER_PASSWORD, "nexus-reader", "dc=nexus"):
        assert secret not in shown


async def test_a_refused_service_account_makes_the_directory_unavailable_not_the_user_wrong(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings(bind_password="not-the-reader-secret"))

    with pytest.raises(DependencyUnavailableError) as raised:
        await directory.authenticate("alice", "alice-secret")

    assert "not-the-reader-secret" not in str(raised.value)


@pytest.mark.parametrize("searcher", ["service-account", "anonymous"])
async def test_an_empty_password_is_refused_before_reaching_the_directory(
    ldap_server: LdapServer, directories: list[LdapDirectory], searcher: str
) -> None:
    url = f"ldap://127.0.0.1:{_free_port()}"
    settings = ldap_server.settings(url=url) if searcher == "service-account" else LdapSettings(url=url)
    directory = _open(directories, settings)

    assert await directory.authenticate("alice", "") is None


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
async def test_a_certificate_from_an_untrusted_ca_makes_the_directory_unavailable(
    ldap_server: LdapServer, directories: list[LdapDirectory], transport: str
) -> None:
    directory = _open(directories, ldap_server.settings(transport, ca_file=None))

    with pytest.raises(DependencyUnavailableError):
        await directory.authenticate("alice", "alice-secret")


async def test_a_certificate_for_another_address_makes_the_directory_unavailable(
    ldap_server: LdapServer, directories: list[LdapDirectory], relay_to_ldaps: str
) -> None:
    # The certificate names 127.0.0.1 and localhost; reached as 127.0.0.2, its chain is trusted
    # but the name is not, and that alone must fail.
    directory = _open(directories, ldap_server.settings("ldaps", url=relay_to_ldaps))

    with pytest.raises(DependencyUnavailableError):
        await directory.authenticate("alice", "alice-secret")
    relayed = _open(directories, ldap_server.settings("ldaps", url=relay_to_ldaps, verify_certificate=False))
    assert await relayed.authenticate("alice", "alice-secret") is not None


async def test_verification_off_accepts_the_untrusted_certificate(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings("ldaps", ca_file=None, verify_certificate=False))

    assert await directory.authenticate("carol", "carol-secret") is not None


async def test_twenty_concurrent_logins_are_all_answered_correctly(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    directory = _open(directories, ldap_server.settings("starttls"))
    attempts = [
        (uid, password if n % 2 == 0 else "wrong") for n, (uid, password) in enumerate(PASSWORDS.items())
    ] * 5

    results = await asyncio.gather(*(directory.authenticate(uid, password) for uid, password in attempts))

    for (uid, password), identity in zip(attempts, results, strict=True):
        if password == "wrong":
            assert identity is None
        else:
            assert identity is not None
            assert identity.username == uid


async def test_the_event_loop_keeps_running_while_a_directory_hangs(
    ldap_server: LdapServer, directories: list[LdapDirectory], silent_server: int
) -> None:
    directory = _open(
        directories, ldap_server.settings(url=f"ldap://127.0.0.1:{silent_server}", timeout_s=1.0)
    )
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        with pytest.raises(DependencyUnavailableError):
            await directory.authenticate("alice", "alice-secret")
    finally:
        ticker.cancel()
    waited = time.perf_counter() - started

    assert 0.9 < waited < 3.0  # the receive timeout ended the login
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > 40
    assert max(gaps) < 0.2


async def test_close_stops_the_worker_threads_and_refuses_new_logins(ldap_settings: LdapSettings) -> None:
    directory = LdapDirectory(ldap_settings)
    assert await directory.authenticate("bob", "bob-secret") is not None
    assert any(thread.name.startswith("nexus-ldap") for thread in threading.enumerate())

    await directory.close()
    await directory.close()

    assert not any(thread.name.startswith("nexus-ldap") for thread in threading.enumerate())
    with pytest.raises(DependencyUnavailableError):
        await directory.authenticate("bob", "bob-secret")


def test_the_service_password_stays_out_of_the_settings_repr(ldap_server: LdapServer) -> None:
    assert READER_PASSWORD not in repr(ldap_server.settings())


def test_an_ldap_url_gives_the_base_attribute_and_filter() -> None:
    settings = LdapSettings(
        url="ldaps://ldap.example.test/ou=people,dc=example,dc=test?cn?sub?(objectClass=inetOrgPerson)",
        group_base="ou=groups,dc=example,dc=test",
    )

    assert settings.url == "ldaps://ldap.example.test"
    assert (settings.host, settings.port, settings.use_ssl) == ("ldap.example.test", 636, True)
    assert settings.user_base == "ou=people,dc=example,dc=test"
    assert settings.username_attribute == "cn"
    assert settings.user_filter == "(&(objectClass=inetOrgPerson)(cn={username}))"
    assert (settings.bind_dn, settings.bind_password) == ("", "")
    assert LdapSettings(
        url="ldap://ldap.example.test/dc=example,dc=test?uid??objectClass=person"
    ).user_filter == ("(&(objectClass=person)(uid={username}))")


async def test_the_source_documents_url_alone_is_enough_and_plain_ldap_to_another_host_is_flagged(
    directories: list[LdapDirectory], caplog: pytest.LogCaptureFixture
) -> None:
    settings = LdapSettings(url="ldap://enterprise.local")

    with caplog.at_level(logging.WARNING, logger="nexus.backends.auth.ldap"):
        _open(directories, settings)
        _open(directories, LdapSettings(url="ldaps://enterprise.local"))

    assert (settings.host, settings.port, settings.bind_dn, settings.user_base) == (
        "enterprise.local",
        389,
        "",
        "",
    )
    assert [record.getMessage() for record in caplog.records] == [
        "LDAP to enterprise.local:389 is not encrypted: user passwords cross the network in clear "
        "(use ldaps:// or start_tls)"
    ]


@pytest.mark.parametrize(
    ("given", "bind_password"),
    [({"bind_dn": READER_DN}, READER_PASSWORD), ({"bind_password": READER_PASSWORD}, READER_PASSWORD)],
    ids=["dn-without-password", "password-without-dn"],
)
def test_a_bind_dn_and_password_are_given_together_or_not_at_all(
    ldap_server: LdapServer, given: dict[str, str], bind_password: str
) -> None:
    with pytest.raises(ConfigurationError, match="go together") as raised:
        LdapSettings(url=ldap_server.url, **given)

    assert bind_password not in str(raised.value)


_VALID = {
    "url": "ldap://127.0.0.1:3389",
    "bind_dn": "cn=reader,dc=example,dc=test",
    "bind_password": "pw",
    "user_base": "ou=people,dc=example,dc=test",
    "group_base": "ou=groups,dc=example,dc=test",
}


@pytest.mark.parametrize(
    "change",
    [
        {"url": "http://127.0.0.1"},
        {"url": "ldap://"},
        {"url": "ldap://127.0.0.1:99999"},
        {"url": "ldap://user:pw@127.0.0.1"},
        {"url": "ldap://127.0.0.1/#people"},
        {"url": "ldap://127.0.0.1/ou=other,dc=example,dc=test"},
        {"url": "ldap://127.0.0.1/?uid?one"},
        {"url": "ldap://127.0.0.1/?uid,cn"},
        {"url": "ldap://127.0.0.1/????bindname=cn%3Dx"},
        {"url": "ldap://127.0.0.1/?cn", "username_attribute": "mail"},
        {"url": "ldap://127.0.0.1/?cn", "user_filter": "(mail={username})"},
        {"url": "ldaps://127.0.0.1", "start_tls": True},
        {"bind_password": ""},
        {"bind_dn": ""},
        {"bind_dn": "reader"},
        {"user_base": "people"},
        {"group_base": "ou=groups;dc=example"},
        {"user_filter": "uid={username}"},
        {"user_filter": "(uid=alice)"},
        {"group_filter": "(member=x)"},
        {"timeout_s": 0},
        {"max_concurrency": 0},
        {"ca_file": "/nonexistent/ca.pem"},
    ],
)
def test_unusable_settings_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        LdapSettings(**{**_VALID, **change})

    assert "pw@" not in str(raised.value)


def test_anonymous_search_shows_people_and_groups_but_never_a_password(ldap_server: LdapServer) -> None:
    people = f"ou=people,{SUFFIX}"

    alice = ldap_server.search(people, "(uid=alice)", ["uid", "mail", "memberOf", "userPassword"])
    with_password = ldap_server.search(SUFFIX, "(userPassword=*)", ["uid"])
    password_only = ldap_server.search(people, "(uid=*)", ["userPassword"])
    services = ldap_server.search(SUFFIX, "(cn=nexus-*)", ["cn"])
    as_reader = ldap_server.search(
        people, "(uid=*)", ["userPassword"], dn=READER_DN, password=READER_PASSWORD
    )

    assert len(alice) == 1
    assert alice[0]["mail"] == ["alice@nexus.test"]
    assert len(alice[0]["memberOf"]) == 2
    assert not alice[0].get("userPassword")  # ldap3 lists a requested attribute it did not get as []
    assert with_password == []
    assert len(password_only) == len(PASSWORDS)
    assert len(as_reader) == len(PASSWORDS)
    assert not any(entry.get("userPassword") for entry in password_only + as_reader)
    assert services == []


@pytest.mark.parametrize(
    ("roles_from", "expected"),
    [
        ({"groups_as_roles": True}, {"admins", "developers"}),
        ({"group_role_map": ROLE_MAP}, {"admin", "developer"}),
    ],
    ids=["groups-as-roles", "role-map"],
)
async def test_the_url_alone_logs_alice_in_with_roles_from_her_groups(
    ldap_server: LdapServer,
    directories: list[LdapDirectory],
    caplog: pytest.LogCaptureFixture,
    roles_from: dict[str, object],
    expected: set[str],
) -> None:
    caplog.set_level(logging.INFO, logger="nexus.backends.auth.ldap")
    directory = _open(directories, LdapSettings(url=ldap_server.url, **roles_from))

    # The first logins race to read the naming context; it is read once and kept.
    logins = await asyncio.gather(*(directory.authenticate("alice", "alice-secret") for _ in range(6)))
    refused = [await directory.authenticate("alice", "wrong"), await directory.authenticate("nobody", "x")]

    for identity in logins:
        assert identity is not None
        assert identity.subject == user_dn("alice")
        assert identity.roles == expected
    assert refused == [None, None]
    found = [record.getMessage() for record in caplog.records if "naming context" in record.getMessage()]
    assert found == [f"LDAP {HOST}:{LDAP_PORT}: no user_base given; searching the naming context {SUFFIX}"]


@pytest.mark.parametrize(
    ("path", "options"),
    [
        (f"/{SUFFIX}?uid", {"group_role_map": ROLE_MAP}),
        (f"/ou=people,{SUFFIX}", {"group_role_map": ROLE_MAP, "member_of_attribute": "memberOf"}),
    ],
    ids=["groups-searched-under-the-url-base", "member-of"],
)
async def test_a_base_in_the_url_is_searched_without_reading_the_naming_context(
    ldap_server: LdapServer,
    directories: list[LdapDirectory],
    caplog: pytest.LogCaptureFixture,
    path: str,
    options: dict[str, object],
) -> None:
    caplog.set_level(logging.INFO, logger="nexus.backends.auth.ldap")
    directory = _open(directories, LdapSettings(url=ldap_server.url + path, **options))

    bob = await directory.authenticate("bob", "bob-secret")

    assert bob is not None
    assert bob.roles == {"developer"}
    assert not [record for record in caplog.records if "naming context" in record.getMessage()]


async def test_a_directory_that_names_no_naming_context_is_unavailable_until_user_base_is_set(
    ldap_server: LdapServer, directories: list[LdapDirectory]
) -> None:
    # The confined account may search people but cannot read the root DSE.
    confined = {"bind_dn": CONFINED_DN, "bind_password": CONFINED_PASSWORD, "groups_as_roles": True}
    directory = _open(directories, LdapSettings(url=ldap_server.url, **confined))

    with pytest.raises(DependencyUnavailableError, match="user_base must be configured") as raised:
        await directory.authenticate("alice", "alice-secret")

    assert CONFINED_PASSWORD not in str(raised.value) + repr(raised.value.to_problem())
    based = _open(directories, LdapSettings(url=ldap_server.url, user_base=SUFFIX, **confined))
    alice = await based.authenticate("alice", "alice-secret")
    assert alice is not None
    assert alice.roles == {"admins", "developers"}
