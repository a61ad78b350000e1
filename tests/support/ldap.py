"""The test OpenLDAP directory as session fixtures: `scripts/ldap-server` run once, then settings for it.

`ldap_server` makes sure the private slapd answers (skipping locally, failing under CI=true when it
cannot), `ldap_settings` are plain-LDAP settings for it, and `ldap_directory` an `LdapDirectory`
closed after each test. The directory's content is the script's: alice, bob, carol, dave, and the
groups admins, developers and operators. Anyone may search people and groups (never userPassword);
the reader service account reads everything else; the confined one cannot read the root DSE.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require_service

from nexus.backends.auth.ldap import LdapDirectory, LdapSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ldap-server"
HOST, LDAP_PORT, LDAPS_PORT = "127.0.0.1", 3389, 3636
SUFFIX = "dc=nexus,dc=test"
CA_FILE = "/tmp/nexus-slapd/ca.pem"  # noqa: S108 - where scripts/ldap-server writes it
ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{SUFFIX}", "admin-secret"
READER_DN, READER_PASSWORD = f"cn=nexus-reader,ou=services,{SUFFIX}", "reader-secret"
CONFINED_DN, CONFINED_PASSWORD = f"cn=nexus-confined,ou=services,{SUFFIX}", "confined-secret"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "dave": "p(a)ss*\\word"}
ROLE_MAP = {"admins": "admin", "developers": "developer", "operators": "operator"}
START_TIMEOUT_S = 300  # a first run may install slapd from Debian


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


@dataclass(frozen=True)
class LdapServer:
    """Handle on the running test slapd: settings for each transport and its operation counters."""

    ca_file: str = CA_FILE

    url: str = f"ldap://{HOST}:{LDAP_PORT}"

    def settings(self, transport: str = "plain", **overrides: Any) -> LdapSettings:
        """Settings for `transport`: "plain" (ldap://), "starttls" or "ldaps", with the test CA."""
        options: dict[str, Any] = {
            "url": self.url,
            "bind_dn": READER_DN,
            "bind_password": READER_PASSWORD,
            "user_base": f"ou=people,{SUFFIX}",
            "group_base": f"ou=groups,{SUFFIX}",
            "group_role_map": ROLE_MAP,
            "attributes": ("mail", "cn", "l", "departmentNumber", "employeeType"),
            "timeout_s": 3.0,
        }
        if transport == "starttls":
            options.update(start_tls=True, ca_file=self.ca_file)
        elif transport == "ldaps":
            options.update(url=f"ldaps://{HOST}:{LDAPS_PORT}", ca_file=self.ca_file)
        options.update(overrides)
        return LdapSettings(**options)

    def search(
        self, base: str, search_filter: str, attributes: list[str], *, dn: str = "", password: str = ""
    ) -> list[dict[str, Any]]:
        """The attributes of each entry found, searching as `dn` (anonymously when empty)."""
        # Imported here, after nexus.backends.auth.ldap, which imports ldap3 past pyasn1's deprecations.
        from ldap3 import ANONYMOUS, NONE, SIMPLE, SUBTREE, Connection, Server

        connection = Connection(
            Server(HOST, port=LDAP_PORT, get_info=NONE),
            user=dn or None,
            password=password or None,
            authentication=SIMPLE if dn else ANONYMOUS,
        )
        with connection:
            connection.search(base, search_filter, SUBTREE, attributes=attributes)
            return [
                dict(item["attributes"])
                for item in connection.response or ()
                if item.get("type") == "searchResEntry"
            ]

    def bind_count(self) -> int:
        """Binds the server has completed so far (cn=Monitor), this read's own bind included."""
        # Imported here, after nexus.backends.auth.ldap, which imports ldap3 past pyasn1's deprecations.
        from ldap3 import BASE, NONE, SIMPLE, Connection, Server

        connection = Connection(
            Server(HOST, port=LDAP_PORT, get_info=NONE),
            user=ADMIN_DN,
            password=ADMIN_PASSWORD,
            authentication=SIMPLE,
        )
        with connection:
            connection.search(
                "cn=Bind,cn=Operations,cn=Monitor", "(objectClass=*)", BASE, attributes=["monitorOpCompleted"]
            )
            return int(connection.entries[0]["monitorOpCompleted"].value)


@pytest.fixture(scope="session")
def ldap_server() -> LdapServer:
    """The private slapd of `scripts/ldap-server` on 127.0.0.1:3389 (ldap, StartTLS) and :3636 (ldaps)."""
    try:
        done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            [str(SCRIPT)], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
        failure = "" if done.returncode == 0 else (done.stdout + done.stderr).strip()[-500:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure:
        if os.environ.get("CI") == "true":
            pytest.fail(f"scripts/ldap-server could not start slapd: {failure}", pytrace=False)
        pytest.skip(f"scripts/ldap-server could not start slapd: {failure}")
    require_service("OpenLDAP slapd", HOST, LDAP_PORT)
    require_service("OpenLDAP slapd (ldaps)", HOST, LDAPS_PORT)
    return LdapServer()


@pytest.fixture(scope="session")
def ldap_settings(ldap_server: LdapServer) -> LdapSettings:
    """Plain-LDAP settings for the test directory, groups mapped to admin, developer and operator."""
    return ldap_server.settings()


@pytest.fixture
async def ldap_directory(ldap_settings: LdapSettings) -> AsyncIterator[LdapDirectory]:
    """An `LdapDirectory` on the plain-LDAP settings, closed after the test."""
    directory = LdapDirectory(ldap_settings)
    yield directory
    await directory.close()
