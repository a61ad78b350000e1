"""The `nexus` command's login cache: one private JSON file of sessions, keyed by server URL and tenant.

`credentials.json` has mode 0600 and is only ever replaced whole (temp file + `os.replace`). A config
directory the CLI creates is 0700; an existing one is never re-moded, and one others can write is
refused (they could plant or swap the file). `CachedLogin` hands out a cached access token and renews
it from the session. Imports the standard library and the CLI's light modules only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from nexus.channels.cli.problem import Failure
from nexus.errors import AuthenticationError, InternalError, InvalidInputError

if TYPE_CHECKING:
    from nexus.channels.cli.client import CliClient

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; writers then race, last one wins
    fcntl = None  # type: ignore[assignment]  # a missing optional module

FILE_NAME = "credentials.json"
_LOCK_NAME = ".credentials.lock"
_VERSION = 1
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
RENEW_MARGIN_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$NEXUS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/nexus`, else `~/.config/nexus`."""
    env = os.environ if environ is None else environ
    if env.get("NEXUS_CONFIG_DIR"):
        return Path(env["NEXUS_CONFIG_DIR"])
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "nexus"
    return Path.home() / ".config" / "nexus"


def normalize_url(url: str) -> str:
    """The cache key of a server: lower-case scheme and host, no default port, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def login_key(url: str, tenant: str | None = None) -> str:
    """The cache key of a login: its server, and the tenant prefix it was made on (`nexus --tenant`).

    A tenant's login is `<url>#<prefix>`: a normalized URL keeps no fragment, so no server's own
    login can be mistaken for a tenant's, and a platform login is keyed as before.
    """
    base = normalize_url(url)
    return base if tenant is None else f"{base}#{tenant}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """One server's login: the session, its current access token, and who it is for.

    Access-token times are on this machine's clock (receipt time plus `expires_in`), so a skewed
    server clock does not make a fresh token look stale.
    """

    username: str
    user_id: str
    roles: tuple[str, ...]
    session_token: str = field(repr=False)
    session_expires_at: str
    access_token: str = field(repr=False)
    access_issued_at: float
    access_expires_at: float
    auth_time: str | None = None

    @classmethod
    def from_grant(
        cls, grant: Mapping[str, Any], now: float, previous: Credentials | None = None
    ) -> Credentials:
        """The cache entry for a login answer; a step-up answer (no session token) keeps the session."""
        user = grant.get("user")
        session_token = grant.get("session_token") or (previous.session_token if previous else None)
        if not isinstance(user, dict) or not isinstance(session_token, str):
            raise _malformed("login")
        access_token, expires_at = _access(grant, now)
        roles = user.get("roles")
        return cls(
            username=str(user.get("username", "")),
            user_id=str(user.get("id", "")),
            roles=tuple(map(str, roles)) if isinstance(roles, list) else (),
            session_token=session_token,
            session_expires_at=str(grant.get("session_expires_at", "")),
            access_token=access_token,
            access_issued_at=now,
            access_expires_at=expires_at,
            auth_time=grant.get("auth_time") if isinstance(grant.get("auth_time"), str) else None,
        )

    def with_access(self, answer: Mapping[str, Any], now: float) -> Credentials:
        """This login with the channel token of a `/auth/token` answer."""
        access_token, expires_at = _access(answer, now)
        return replace(self, access_token=access_token, access_issued_at=now, access_expires_at=expires_at)

    def is_access_fresh(self, now: float) -> bool:
        """Whether the access token outlives the renewal margin (30 s, or half its life if shorter)."""
        margin = min(RENEW_MARGIN_S, (self.access_expires_at - self.access_issued_at) / 2)
        return now < self.access_expires_at - margin

    @classmethod
    def from_json(cls, entry: object) -> Credentials | None:
        """A cached entry, or None when it is not one this module wrote."""
        if not isinstance(entry, dict):
            return None
        try:
            found = cls(**entry)
        except TypeError:
            return None
        texts = (found.username, found.user_id, found.session_token, found.access_token)
        numbers = (found.access_issued_at, found.access_expires_at)
        well_formed = (
            all(isinstance(text, str) for text in texts)
            and all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
            and isinstance(found.roles, list)
            and isinstance(found.session_expires_at, str)
            and (found.auth_time is None or isinstance(found.auth_time, str))
        )
        return replace(found, roles=tuple(map(str, found.roles))) if well_formed else None

    def to_json(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["roles"] = list(self.roles)
        return entry


def _access(answer: Mapping[str, Any], now: float) -> tuple[str, float]:
    """The access token of a grant or token answer and when it expires on this machine's clock."""
    token, lifetime = answer.get("access_token"), answer.get("expires_in")
    if not isinstance(token, str) or not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
        raise _malformed("token")
    return token, now + float(lifetime)


def _malformed(what: str) -> Failure:
    return Failure(
        "Unexpected answer",
        f"The {what} answer is not one a Nexus server gives; is the URL right?",
        InternalError.exit_code,
    )


class CredentialStore:
    """`credentials.json` in one directory: read, save and forget a server's login."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    @classmethod
    def default(cls) -> CredentialStore:
        return cls(config_dir())

    def load(self, url: str, *, tenant: str | None = None) -> Credentials | None:
        """The login cached for `url` (on `tenant`'s route; None: the platform's); None when there
        is none, or the file is unreadable or in a directory others can write."""
        return Credentials.from_json(self._read().get(login_key(url, tenant)))

    def save(self, url: str, credentials: Credentials, *, tenant: str | None = None) -> None:
        with self._locked():
            servers = self._read()
            servers[login_key(url, tenant)] = credentials.to_json()
            self._write(servers)

    def delete(self, url: str, *, tenant: str | None = None) -> bool:
        """Forget the login for `url` (on `tenant`'s route); False when none was cached."""
        with self._locked():
            servers = self._read()
            if servers.pop(login_key(url, tenant), None) is None:
                return False
            self._write(servers)
            return True

    def _read(self) -> dict[str, Any]:
        """Every cached server; an unreadable or malformed file counts as empty (a save replaces it)."""
        try:
            if _refusal(self.directory) is not None:
                return {}  # others could have planted it
            with os.fdopen(os.open(self.path, os.O_RDONLY | _NOFOLLOW), "rb") as file:
                if stat.S_IMODE(os.fstat(file.fileno()).st_mode) & 0o077:
                    os.fchmod(file.fileno(), _FILE_MODE)
                document = json.loads(file.read())
        except (OSError, ValueError):
            return {}
        servers = document.get("servers") if isinstance(document, dict) else None
        return dict(servers) if isinstance(servers, dict) else {}

    def _write(self, servers: Mapping[str, Any]) -> None:
        document = json.dumps({"version": _VERSION, "servers": servers}, indent=2).encode()
        temp = self.directory / f".{FILE_NAME}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        descriptor = os.open(temp, flags, _FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(document)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize read-modify-write across `nexus` processes (a login beside a token renewal)."""
        try:
            if not _create_private(self.directory):
                refusal = _refusal(self.directory)
                if refusal is not None:
                    raise refusal
            descriptor = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | _NOFOLLOW, _FILE_MODE)
            try:
                if fcntl is not None:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise Failure(
                "Cannot keep the login", f"{self.directory}: {reason}.", InternalError.exit_code
            ) from None


def _create_private(directory: Path) -> bool:
    """Create `directory` and its missing parents with mode 0700; False when it already existed."""
    try:
        directory.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        _create_private(directory.parent)
        return _create_private(directory)
    directory.chmod(_DIR_MODE)  # mkdir's mode went through the umask
    return True


def _refusal(directory: Path) -> Failure | None:
    """Why an existing `directory` must not hold logins; None when it may."""
    mode = directory.stat().st_mode
    if not stat.S_ISDIR(mode):
        why = "is not a directory"
    elif stat.S_IMODE(mode) & 0o022:
        why = f"can be written by other users (mode {stat.S_IMODE(mode):o}): they could swap the login file"
    else:
        return None
    return Failure(
        "Unsafe config directory",
        f"{directory} {why}; set NEXUS_CONFIG_DIR to a directory only you can write.",
        InvalidInputError.exit_code,
    )


def login_command(url: str, tenant: str | None = None) -> str:
    """The command that logs in to `url` (on `tenant`'s route): global options come first."""
    on_tenant = f" --tenant {tenant}" if tenant is not None else ""
    return f"nexus --url {url}{on_tenant} login"


def not_logged_in(
    url: str, why: str = "No login is cached for this server", *, tenant: str | None = None
) -> Failure:
    return Failure(
        "Not logged in", f"{why}; run `{login_command(url, tenant)}`.", AuthenticationError.exit_code
    )


def with_login_hint(refusal: Failure, url: str, tenant: str | None = None) -> Failure:
    """The server's refusal, telling the user how to log in."""
    lead = f"{refusal.detail.rstrip('.')}; " if refusal.detail else ""
    detail = f"{lead}run `{login_command(url, tenant)}` (or pass --token)."
    problem = None if refusal.problem is None else {**refusal.problem, "detail": detail}
    return Failure(refusal.title, detail, refusal.exit_code, refusal.facts, problem)


class CachedLogin:
    """The token source of the client commands: the cached access token, renewed from the session."""

    def __init__(
        self,
        store: CredentialStore,
        url: str,
        clock: Callable[[], float] = time.time,
        *,
        tenant: str | None = None,
    ) -> None:
        self._store = store
        self._url = url
        self._clock = clock
        self._tenant = tenant

    def token(self, client: CliClient) -> str | None:
        """The access token to send now, renewed first when it expired or is about to; None if no login."""
        cached = self._store.load(self._url, tenant=self._tenant)
        if cached is None:
            return None
        if cached.is_access_fresh(self._clock()):
            return cached.access_token
        return self._renew(client, cached)

    def renew(self, client: CliClient, refusal: Failure) -> str:
        """After the server refused the access token: a new one from the session, or a `Failure`."""
        cached = self._store.load(self._url, tenant=self._tenant)
        if cached is None:
            raise with_login_hint(refusal, self._url, self._tenant)
        return self._renew(client, cached)

    def _renew(self, client: CliClient, cached: Credentials) -> str:
        try:
            answer = client.channel_token(cached.session_token)
        except Failure as failure:
            if failure.problem is None or failure.problem.get("code") != AuthenticationError.code:
                raise
            self._store.delete(self._url, tenant=self._tenant)
            raise not_logged_in(self._url, "The session has ended", tenant=self._tenant) from None
        renewed = cached.with_access(answer, self._clock())
        self._store.save(self._url, renewed, tenant=self._tenant)
        return renewed.access_token


def moment(iso: str | None) -> str:
    """An ISO time from the server in this machine's time zone, to the second."""
    if not iso:
        return "unknown"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
