"""The commands that run an app in this process (`serve`, `mcp`, `keys`): find it, then call its API.

The app is `MODULE:APP`, imported like uvicorn does, or a bare `Nexus` on a state URL. The one CLI
module that imports `nexus.app`; the client commands never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterable
from types import ModuleType

from nexus.app import Nexus
from nexus.channels.cli.problem import Failure, failure_from_error
from nexus.core.identity import IssuedKey
from nexus.core.types import ApiKey
from nexus.errors import ConfigurationError, InternalError, InvalidInputError, NexusError

_USAGE = InvalidInputError.exit_code


def serve(spec: str, *, api_port: int | None = None, mcp_port: int | None = None) -> None:
    """`nexus serve`: serve the app's API and MCP ports until Ctrl-C."""
    app = load_app(spec)
    with contextlib.suppress(KeyboardInterrupt):
        app.start(api_port=api_port, mcp_port=mcp_port)


def serve_mcp(spec: str) -> None:
    """`nexus mcp`: serve the app's workflows as MCP tools over stdio."""
    app = load_app(spec)
    with contextlib.suppress(KeyboardInterrupt):
        app.serve_mcp_stdio()


def create_key(
    app_spec: str | None,
    state_url: str | None,
    name: str,
    roles: Iterable[str],
    tenants: Iterable[str] = (),
) -> IssuedKey:
    app = admin_app(app_spec, state_url)
    try:
        return asyncio.run(app.create_api_key(name, roles=roles, tenants=tenants))
    except ConfigurationError as error:  # an invalid tenant id
        raise Failure(error.title, error.message, _USAGE) from None


def list_keys(app_spec: str | None, state_url: str | None) -> list[ApiKey]:
    return asyncio.run(admin_app(app_spec, state_url).list_api_keys())


def revoke_key(app_spec: str | None, state_url: str | None, key_id: str) -> bool:
    return asyncio.run(admin_app(app_spec, state_url).revoke_api_key(key_id))


def rotate_signing_key(app_spec: str | None, state_url: str | None, algorithm: str) -> str:
    app = admin_app(app_spec, state_url)
    if not app.options.enable_auth:
        # A bare --state-url app: signing keys belong to auth, which that app has off.
        app = Nexus(state_url=app.options.state_url, enable_auth=True)
    try:
        return asyncio.run(app.rotate_signing_key(algorithm=algorithm))
    except ConfigurationError as error:  # an algorithm Nexus does not sign with
        raise Failure(error.title, error.message, _USAGE) from None


def load_app(spec: str) -> Nexus:
    """Import `MODULE[:ATTR[.ATTR...]]` with the working directory on `sys.path`; the `Nexus` it names.

    Without `:ATTR` the module must hold exactly one `Nexus` instance at top level.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or (spec.count(":") and not attribute):
        raise Failure("Invalid app reference", f"{spec!r}: expected MODULE:APP, such as myapp:app.", _USAGE)
    module = _import(module_name)
    found = _attribute(module, spec, attribute) if attribute else _only_app(module, spec)
    if not isinstance(found, Nexus):
        raise Failure(
            "Not a Nexus app", f"{spec!r} is a {type(found).__name__}, not a Nexus instance.", _USAGE
        )
    return found


def admin_app(app_spec: str | None, state_url: str | None) -> Nexus:
    """The app whose state store an admin command works on: `--app`'s, or a bare one on `--state-url`."""
    if (app_spec is None) == (state_url is None):
        raise Failure(
            "Which state store?", "Give exactly one of --app MODULE:APP or --state-url URL.", _USAGE
        )
    if app_spec is not None:
        return load_app(app_spec)
    try:
        return Nexus(state_url=str(state_url))
    except NexusError as error:
        raise failure_from_error(error) from None


def _import(module_name: str) -> ModuleType:
    # Like uvicorn's default --app-dir: the user's modules are found from where they run the command.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise Failure(
                "Cannot import the app", f"No module named {module_name!r} (from {cwd}).", _USAGE
            ) from None
        raise _import_failure(module_name, exc) from None
    except Exception as exc:  # noqa: BLE001  # any error in the user's module, reported in one line
        raise _import_failure(module_name, exc) from None


def _import_failure(module_name: str, exc: Exception) -> Failure:
    """Where the user's module failed, in one line: their own file and line, not a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    detail = f"{type(exc).__name__}: {exc}{where}"
    return Failure(f"Importing {module_name!r} failed", detail, InternalError.exit_code)


def _attribute(module: ModuleType, spec: str, path: str) -> object:
    found: object = module
    for part in path.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise Failure("App not found", f"{spec!r}: no attribute {part!r}.", _USAGE) from None
    return found


def _only_app(module: ModuleType, spec: str) -> Nexus:
    apps = {name: value for name, value in vars(module).items() if isinstance(value, Nexus)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    found = f"several Nexus instances ({', '.join(sorted(apps))})" if apps else "no Nexus instance"
    detail = f"module {spec!r} defines {found}; name one as MODULE:APP."
    raise Failure("App not found", detail, _USAGE)
