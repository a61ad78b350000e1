"""LDAP login (`Directory`) with ldap3: search the user (as a service account or anonymously), bind as them.

Owns the LDAP settings and the protocol work; every blocking ldap3 call runs on a small thread pool
of its own, never on the event loop. Imports only ldap3, the standard library and core.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import secrets
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from nexus.core.auth.model import ExternalIdentity
from nexus.errors import ConfigurationError, DependencyUnavailableError

with warnings.catch_warnings():
    # ldap3 2.9 imports pyasn1 names (tagMap, typeMap) that pyasn1 0.6 deprecates; nothing else.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from ldap3 import ANONYMOUS, BASE, IP_SYSTEM_DEFAULT, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
    from ldap3.core.exceptions import LDAPException, LDAPPasswordIsMandatoryError, LDAPSASLPrepError
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

_log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}
_MAX_USERNAME_CHARS = 256
# Result codes that mean "the server cannot serve now", not "wrong credentials".
_UNAVAILABLE_CODES = frozenset({51, 52, 80})  # busy, unavailable, other
_NO_SUCH_OBJECT, _SIZE_LIMIT_EXCEEDED = 32, 4
# Naming contexts that hold the server's own data (cn=config, AD's configuration, schema and DNS
# partitions, 389's changelog), never users; recognised by the value of their first RDN.
_SERVER_CONTEXTS = frozenset(
    {"config", "configuration", "schema", "changelog", "domaindnszones", "forestdnszones"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapSettings:
    """Where the directory is, how Nexus finds users in it, and how their groups become roles.

    The URL alone is enough (`LdapSettings(url="ldap://directory.example")`): users are then searched
    anonymously under the directory's naming context and their groups under the same base. An
    RFC 4516 URL may carry the base, username attribute and filter
    (`ldap://host/ou=people,dc=example?uid??(objectClass=person)`); they move into their fields and
    `url` keeps `scheme://host[:port]`.
    """

    url: str
    """`ldap://host[:port]` or `ldaps://host[:port]`, optionally `/<user base>?<attribute>??<filter>`."""
    bind_dn: str = ""
    """The read-only service account that searches users and groups; empty to search anonymously."""
    bind_password: str = field(default="", repr=False)
    """The service account's password: given exactly when `bind_dn` is."""
    user_base: str = ""
    """Where users are searched (subtree); when empty, the URL's base, else the directory's naming context."""
    group_base: str = ""
    """Where groups are searched (subtree), the user base when empty; with `member_of_attribute`, only
    groups under it count (any group when empty)."""
    user_filter: str = "(uid={username})"
    """Finds one user; `{username}` is replaced by the escaped login name."""
    username_attribute: str = "uid"
    """The attribute whose value becomes the identity's username."""
    group_filter: str = "(member={dn})"
    """Finds a user's groups; `{dn}` is replaced by the escaped user DN."""
    member_of_attribute: str | None = None
    """Read groups from this attribute of the user entry (e.g. `memberOf`) instead of searching."""
    group_role_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Group cn -> Nexus role; unmapped groups give no role."""
    groups_as_roles: bool = False
    """Every group's cn is a role as it is (`group_role_map` still renames the ones it lists)."""
    attributes: tuple[str, ...] = ()
    """Directory attributes copied into the identity's attributes (for ABAC), e.g. `mail`, `l`."""
    start_tls: bool = False
    """Upgrade an `ldap://` connection with StartTLS before anything is sent."""
    ca_file: str | None = None
    """PEM file of the CAs trusted for the server certificate; the system's CAs when None."""
    verify_certificate: bool = True
    """Check the certificate chain and host name (turn off only for a throwaway test directory)."""
    timeout_s: float = 5.0
    """Connect and per-response timeout; a slow directory fails the login instead of stalling it."""
    max_concurrency: int = 4
    """Directory operations running at once (threads of this directory's pool)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_role_map", MappingProxyType(dict(self.group_role_map)))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        for name, value in _fields_from_url(self).items():
            object.__setattr__(self, name, value)
        _validate(self)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def use_ssl(self) -> bool:
        return urlsplit(self.url).scheme == "ldaps"


@dataclass(frozen=True, slots=True)
class _LdapUrl:
    server: str
    base: str
    attribute: str
    filter: str


def _split_url(url: str) -> _LdapUrl:
    """The parts of an RFC 4516 URL that locate users; anything it cannot honour is refused."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok, parts = False, urlsplit("")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not port_ok:
        raise ConfigurationError("LDAP url must be ldap://host[:port] or ldaps://host[:port]")
    if parts.username or parts.password or parts.fragment:
        raise ConfigurationError("LDAP url takes no credentials or fragment; use bind_dn and bind_password")
    attribute, scope, extra_filter, extensions = (
        unquote(p) for p in [*parts.query.split("?", 3), "", "", ""][:4]
    )
    if scope not in ("", "sub"):
        raise ConfigurationError(f"LDAP URL scope {scope!r} is not supported; users are found by subtree")
    if extensions:
        raise ConfigurationError("LDAP URL extensions are not supported; use the LDAP settings instead")
    if "," in attribute:
        raise ConfigurationError("LDAP URL names one username attribute, not a list")
    if extra_filter and not extra_filter.startswith("("):
        extra_filter = f"({extra_filter})"
    return _LdapUrl(
        f"{parts.scheme}://{parts.netloc}", unquote(parts.path.lstrip("/")), attribute, extra_filter
    )


def _fields_from_url(settings: LdapSettings) -> dict[str, str]:
    """The fields an RFC 4516 URL sets; a field it sets that is also given otherwise is refused."""
    url = _split_url(settings.url)
    fields = {"url": url.server}
    if url.base:
        if settings.user_base and settings.user_base.casefold() != url.base.casefold():
            raise ConfigurationError("LDAP url names a base and user_base another; give the base once")
        fields["user_base"] = url.base
    if url.attribute or url.filter:
        attribute = url.attribute or settings.username_attribute
        if settings.username_attribute not in ("uid", attribute):
            raise ConfigurationError("LDAP url names a username attribute and username_attribute another")
        user_filter = f"({attribute}={{username}})"
        if url.filter:
            user_filter = f"(&{url.filter}{user_filter})"
        if settings.user_filter not in ("(uid={username})", user_filter):
            raise ConfigurationError("LDAP url sets the user filter; leave user_filter out")
        fields.update(username_attribute=attribute, user_filter=user_filter)
    return fields


def _validate(settings: LdapSettings) -> None:
    if settings.start_tls and settings.use_ssl:
        raise ConfigurationError("LDAP start_tls applies to ldap:// only; ldaps:// is TLS already")
    _validate_search(settings)
    if not settings.timeout_s > 0 or not math.isfinite(settings.timeout_s):
        raise ConfigurationError("LDAP timeout_s must be a positive number of seconds")
    if settings.max_concurrency < 1:
        raise ConfigurationError("LDAP max_concurrency must be at least 1")
    if settings.ca_file is not None and not Path(settings.ca_file).is_file():
        raise ConfigurationError(f"LDAP ca_file {settings.ca_file} is not a readable file")


def _validate_search(settings: LdapSettings) -> None:
    if bool(settings.bind_dn) != bool(settings.bind_password):
        # A DN with an empty password is an unauthenticated bind: it would search anonymously unnoticed.
        raise ConfigurationError(
            "LDAP bind_dn and bind_password go together: both for a service account, "
            "neither to search anonymously"
        )
    for name in ("bind_dn", "user_base", "group_base"):
        if getattr(settings, name) and not _is_dn(getattr(settings, name)):
            raise ConfigurationError(f"LDAP {name} is not a distinguished name")
    if not _is_filter_template(settings.user_filter, "{username}"):
        raise ConfigurationError("LDAP user_filter must be a parenthesised filter containing {username}")
    if settings.member_of_attribute is None and not _is_filter_template(settings.group_filter, "{dn}"):
        raise ConfigurationError("LDAP group_filter must be a parenthesised filter containing {dn}")


def _is_dn(value: str) -> bool:
    try:
        return bool(_rdns(value))
    except LDAPException:
        return False


def _rdns(dn: str) -> list[tuple[str, str]]:
    """A DN's components as comparable (type, value) pairs; spaces around separators are ignored."""
    return [(kind.casefold(), value.casefold()) for kind, value, _ in parse_dn(dn, strip=True)]


def _is_filter_template(template: str, placeholder: str) -> bool:
    return template.startswith("(") and template.endswith(")") and placeholder in template


def _tls_context(settings: LdapSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"LDAP ca_file {settings.ca_file} holds no usable certificate") from exc
    if not settings.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _ContextTls(Tls):
    """ldap3's TLS hook, handshaking with a standard-library context that checks the host name.

    ldap3's own host name check goes through the deprecated `ssl.match_hostname`; the context's
    check (during the handshake, IP addresses included) replaces it.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(validate=ssl.CERT_NONE)  # verification is the context's, not ldap3's
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        # Small request/response messages: without NODELAY, Nagle and delayed ACKs add ~40 ms per TLS bind.
        connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.socket = self._context.wrap_socket(
            connection.socket, server_hostname=self._server_hostname, do_handshake_on_connect=do_handshake
        )


def _unavailable(settings: LdapSettings, reason: str, exc: BaseException | None = None) -> NoReturn:
    # Only the location and the exception type go to the log: ldap3 messages can quote DNs.
    kind = type(exc).__name__ if exc is not None else "refused"
    _log.warning("LDAP directory %s:%d unavailable: %s (%s)", *_where(settings), reason, kind)
    raise DependencyUnavailableError("The LDAP directory is unavailable") from exc


class LdapDirectory:
    """`Directory` over LDAP: a search (service account or anonymous), then a bind as the user.

    The bind as the user runs on a fresh connection. Without a user base, the directory's root DSE
    names it on the first login (its `defaultNamingContext`, else its first naming context that is
    not the server's own), and it is kept.

    Unknown users and wrong passwords both return None after the same directory work (an unknown
    user costs a bind against a DN that does not exist), so neither answers nor timing enumerate
    users. Empty passwords are refused before any bind: many directories take a DN with an empty
    password as an anonymous bind that succeeds.

    Raises:
        ConfigurationError: `settings.ca_file` cannot be loaded.
    """

    def __init__(self, settings: LdapSettings) -> None:
        self._settings = settings
        self._tls = (
            _ContextTls(_tls_context(settings), settings.host)
            if settings.use_ssl or settings.start_tls
            else None
        )
        if self._tls is not None and not settings.verify_certificate:
            _log.warning("LDAP certificate verification is off for %s:%d", settings.host, settings.port)
        if not (settings.use_ssl or settings.start_tls or _is_loopback(settings.host)):
            _log.warning(
                "LDAP to %s:%d is not encrypted: user passwords cross the network in clear "
                "(use ldaps:// or start_tls)",
                settings.host,
                settings.port,
            )
        self._role_of = {group.casefold(): role for group, role in settings.group_role_map.items()}
        self._absent_rdn = f"cn=nexus-absent-{secrets.token_hex(16)}"
        self._user_base = settings.user_base  # read from the directory on first use when empty
        self._user_base_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="nexus-ldap")
        self._closed = False

    async def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The identity on success; None for wrong credentials or an unknown user (indistinguishable).

        Raises:
            DependencyUnavailableError: the directory cannot be reached, TLS fails, or it is closed.
        """
        if not password or not username or len(username) > _MAX_USERNAME_CHARS:
            return None
        if self._closed:
            raise DependencyUnavailableError("The LDAP directory is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._authenticate, username, password)

    async def close(self) -> None:
        """Refuse new logins and wait (off the loop) for the running ones, each bounded by the timeout."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def _authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        settings = self._settings
        try:
            with self._connection(settings.bind_dn or None, settings.bind_password) as searcher:
                if searcher is None:
                    who = "service account" if settings.bind_dn else "anonymous"
                    _unavailable(settings, f"the {who} bind was refused")
                base = self._base(searcher)
                entries = self._find_user(searcher, base, username)
                if len(entries) != 1:
                    # The same work as a wrong password: a bind, here to a DN that does not exist.
                    self._bind_succeeds(f"{self._absent_rdn},{base}", password)
                    return None
                entry = entries[0]
                if not self._bind_succeeds(entry["dn"], password):
                    return None
                groups = self._groups(searcher, base, entry)
        except (LDAPException, OSError) as exc:
            _unavailable(self._settings, "connection or TLS failed", exc)
        return ExternalIdentity(
            source="ldap",
            subject=entry["dn"],
            username=str(_unwrap(entry["attributes"].get(self._settings.username_attribute)) or username),
            roles=frozenset(self._role(name) for name in groups) - {""},
            attributes=MappingProxyType({**self._identity_attributes(entry), "groups": groups}),
        )

    @contextlib.contextmanager
    def _connection(self, dn: str | None, password: str) -> Iterator[Connection | None]:
        """A fresh connection (TLS as configured) bound as `dn`, or anonymously; None when refused."""
        settings = self._settings
        server = Server(
            settings.host,
            port=settings.port,
            use_ssl=settings.use_ssl,
            tls=self._tls,
            get_info=NONE,
            connect_timeout=settings.timeout_s,
            mode=IP_SYSTEM_DEFAULT,
        )
        # ldap3 packs the receive timeout as whole seconds; referrals are never followed with credentials.
        connection = Connection(
            server,
            user=dn,
            password=password if dn else None,
            authentication=SIMPLE if dn else ANONYMOUS,
            auto_referrals=False,
            receive_timeout=max(1, math.ceil(settings.timeout_s)),
        )
        try:
            connection.open(read_server_info=False)
            if settings.start_tls:
                connection.start_tls(read_server_info=False)
            try:
                bound = connection.bind(read_server_info=False)
            except (LDAPPasswordIsMandatoryError, LDAPSASLPrepError):
                bound = False  # a password SASLprep rejects or maps to nothing: never sent
            if not bound and connection.result and connection.result.get("result") in _UNAVAILABLE_CODES:
                _unavailable(settings, f"bind answered {connection.result.get('description')}")
            yield connection if bound else None
        finally:
            _close(connection)

    def _bind_succeeds(self, dn: str, password: str) -> bool:
        with self._connection(dn, password) as bound:
            return bound is not None

    def _base(self, connection: Connection) -> str:
        """The user base: as configured, or the directory's naming context, read once and kept."""
        if not self._user_base:
            with self._user_base_lock:
                if not self._user_base:
                    self._user_base = self._naming_context(connection)
        return self._user_base

    def _naming_context(self, connection: Connection) -> str:
        settings = self._settings
        wanted = ["defaultNamingContext", "namingContexts"]
        connection.search("", "(objectClass=*)", BASE, attributes=wanted)
        if connection.result.get("result") in _UNAVAILABLE_CODES:
            _unavailable(settings, f"root DSE read answered {connection.result.get('description')}")
        contexts = [
            str(context)
            for item in connection.response or ()
            if item.get("type") == "searchResEntry"
            for name in wanted
            for context in _values(item["attributes"].get(name))
        ]
        for context in contexts:
            if _rdn_value(context).casefold() not in {"", *_SERVER_CONTEXTS}:
                _log.info(
                    "LDAP %s:%d: no user_base given; searching the naming context %s",
                    *_where(settings),
                    context,
                )
                return context
        _log.warning("LDAP %s:%d lists no naming context to search; set user_base", *_where(settings))
        raise DependencyUnavailableError(
            "The LDAP directory names no base to search for users; its user_base must be configured"
        )

    def _find_user(self, service: Connection, base: str, username: str) -> list[dict[str, Any]]:
        settings = self._settings
        wanted = {settings.username_attribute, *settings.attributes}
        if settings.member_of_attribute:
            wanted.add(settings.member_of_attribute)
        search_filter = settings.user_filter.replace("{username}", escape_filter_chars(username))
        # Two entries are enough to know the filter is ambiguous.
        service.search(base, search_filter, SUBTREE, attributes=sorted(wanted), size_limit=2)
        code = service.result.get("result")
        if code not in (0, _NO_SUCH_OBJECT, _SIZE_LIMIT_EXCEEDED):
            _unavailable(settings, f"user search answered {service.result.get('description')}")
        entries = [item for item in service.response or () if item.get("type") == "searchResEntry"]
        if code == _SIZE_LIMIT_EXCEEDED or len(entries) > 1:
            _log.warning("LDAP user_filter matched more than one entry; the login is refused")
        return entries

    def _groups(self, service: Connection, user_base: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
        """The cn of every group the user is in (RBAC assigns roles to them; ABAC reads user.groups)."""
        settings = self._settings
        if settings.member_of_attribute:
            group_dns = _values(entry["attributes"].get(settings.member_of_attribute))
            names = [_rdn_value(dn) for dn in group_dns if _is_under(str(dn), settings.group_base)]
        else:
            search_filter = settings.group_filter.replace("{dn}", escape_filter_chars(entry["dn"]))
            service.search(settings.group_base or user_base, search_filter, SUBTREE, attributes=["cn"])
            if service.result.get("result") not in (0, _NO_SUCH_OBJECT):
                _unavailable(settings, f"group search answered {service.result.get('description')}")
            names = [
                str(name)
                for item in service.response or ()
                if item.get("type") == "searchResEntry"
                for name in _values(item["attributes"].get("cn"))
            ]
        return tuple(sorted(set(names)))

    def _role(self, group: str) -> str:
        mapped = self._role_of.get(group.casefold())
        if mapped is not None:
            return mapped
        return group if self._settings.groups_as_roles else ""

    def _identity_attributes(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in self._settings.attributes:
            values = [value for value in _values(entry["attributes"].get(name)) if isinstance(value, str)]
            if values:
                found[name] = values[0] if len(values) == 1 else tuple(values)
        return found


def _close(connection: Connection) -> None:
    """Unbind when the connection got that far, and release the socket either way (ldap3 may not)."""
    if not connection.closed:
        with contextlib.suppress(LDAPException, OSError):
            connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        sock.close()


def _where(settings: LdapSettings) -> tuple[str, int]:
    return settings.host, settings.port


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_under(dn: str, base: str) -> bool:
    """Whether `dn` is `base` or below it, compared component by component; any DN when `base` is empty."""
    if not base:
        return True
    try:
        components, base_components = _rdns(dn), _rdns(base)
    except LDAPException:
        return False
    return components[len(components) - len(base_components) :] == base_components


def _values(raw: Any) -> list[Any]:
    if raw is None:
        return []
    return list(raw) if isinstance(raw, list | tuple) else [raw]


def _unwrap(raw: Any) -> Any:
    values = _values(raw)
    return values[0] if values else None


def _rdn_value(dn: str) -> str:
    """The value of a DN's first component: `admins` for `cn=admins,ou=groups,...`."""
    try:
        return str(parse_dn(dn)[0][1])
    except (LDAPException, IndexError):
        return ""
