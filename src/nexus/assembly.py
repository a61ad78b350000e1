"""Builds the running parts of an app from its settings: backends, the pipeline, the channel apps.

Part of the composition root with `app.py`; it alone picks backend implementations by URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from nexus.backends.prometheus import PrometheusMeter
from nexus.backends.sql import SqlState, open_state
from nexus.channels import codec
from nexus.channels.cli.server import cli_routes
from nexus.channels.http import HttpOptions, build_http_app
from nexus.channels.mcp import McpChannel
from nexus.core.audit import Auditor
from nexus.core.authorization import AllowAll
from nexus.core.catalog import Catalog
from nexus.core.identity import (
    AnonymousAuthenticator,
    ApiKeyAuthenticator,
    Authenticator,
    IssuedKey,
    new_api_key,
)
from nexus.core.pipeline import Pipeline
from nexus.core.ports import CounterStore, Meter
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopMeter, SystemClock
from nexus.core.types import ApiKey
from nexus.errors import NexusError
from nexus.settings import Options, Settings
from nexus.workflow import AsyncLocalRuntime

VERSION = "0.1.0"


@dataclass(eq=False)
class Assembly:
    """The live parts of one serving app (or of one admin operation when `serving` is off)."""

    loop: asyncio.AbstractEventLoop
    state: SqlState
    counters: CounterStore | None
    clock: SystemClock
    authenticator: Authenticator
    pipeline: Pipeline | None = None
    mcp: McpChannel | None = None
    apps: tuple[Any, ...] = field(default=())

    @contextlib.asynccontextmanager
    async def channels_running(self) -> AsyncIterator[None]:
        if self.mcp is None:
            yield
            return
        async with self.mcp.running():
            yield

    async def is_ready(self) -> bool:
        """Every backend this app needs answers."""
        try:
            await self.state.ping()
            if self.counters is not None:
                await self.counters.ping()
        except NexusError:
            return False
        return True

    async def close(self) -> None:
        if self.counters is not None:
            await self.counters.close()
        await self.state.close()

    async def create_api_key(self, name: str, *, roles: Iterable[str] = ()) -> IssuedKey:
        issued = new_api_key(name, roles, self.clock)
        await self.state.keys.add(issued.key)
        return issued

    async def list_api_keys(self) -> list[ApiKey]:
        return list(await self.state.keys.list())

    async def revoke_api_key(self, key_id: str) -> bool:
        revoked = await self.state.keys.revoke(key_id, self.clock.now())
        self.forget_keys(key_id)
        return revoked

    def forget_keys(self, key_id: str | None = None) -> None:
        if isinstance(self.authenticator, ApiKeyAuthenticator):
            self.authenticator.forget(key_id)


async def assemble(
    options: Options, settings: Settings, catalog: Catalog, *, serving: bool = True
) -> Assembly:
    """Open the backends and, when serving, build the pipeline and both channel apps."""
    clock = SystemClock()
    state = await open_state(options.state_url, audit_max_batch=settings.monitoring.audit_max_batch)
    authenticator: Authenticator = AnonymousAuthenticator()
    if options.enable_auth:
        authenticator = ApiKeyAuthenticator(
            state.keys, clock, cache_ttl_s=settings.auth.api_key_cache_seconds
        )
    assembly = Assembly(asyncio.get_running_loop(), state, None, clock, authenticator)
    if not serving:
        return assembly
    try:
        await _build_serving_parts(assembly, options, settings, catalog)
    except BaseException:
        await assembly.close()
        raise
    return assembly


async def _build_serving_parts(
    assembly: Assembly, options: Options, settings: Settings, catalog: Catalog
) -> None:
    limiter: Limiter = NoLimit()
    if options.rate_limit is not None:
        from nexus.backends.counters import open_counter_store

        counters = assembly.counters = open_counter_store(options.redis_url)
        await counters.ping()  # a configured Redis that does not answer is a start-up error
        limiter = RateLimiter(counters, options.rate_limit)
    prometheus = PrometheusMeter() if options.enable_monitoring else None
    meter: Meter = prometheus if prometheus is not None else NoopMeter()
    pipeline = Pipeline(
        catalog=catalog,
        authenticator=assembly.authenticator,
        authorizer=AllowAll(),
        limiter=limiter,
        auditor=Auditor(assembly.state.audit, assembly.clock),
        meter=meter,
        clock=assembly.clock,
        runtime=AsyncLocalRuntime(node_timeout_s=settings.api.node_timeout_seconds),
        encode=codec.dumps,
    )
    http_options = HttpOptions(
        max_body_bytes=settings.api.max_body_bytes,
        docs_enabled=settings.api.docs_enabled,
        metrics_path=settings.monitoring.metrics_path,
        render_metrics=prometheus.render if prometheus is not None else None,
        is_ready=assembly.is_ready,
        auth_enabled=options.enable_auth,
        title=options.title,
        version=VERSION,
    )
    api_app = build_http_app(pipeline, http_options, extra_routes=cli_routes(pipeline, http_options))
    mcp = McpChannel(
        pipeline, settings.mcp, auth_enabled=options.enable_auth, version=VERSION, host=options.host
    )
    assembly.pipeline, assembly.mcp, assembly.apps = pipeline, mcp, (api_app, mcp.asgi_app)
