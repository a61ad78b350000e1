"""Builds the running parts of an app from its settings: backends, the pipeline, the channel apps.

Part of the composition root with `app.py`; it alone picks backend implementations by URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from nexus.backends.auth.signing import SigningKeys
from nexus.backends.prometheus import PrometheusMeter
from nexus.backends.sql import SqlState, open_state
from nexus.channels import codec
from nexus.channels.auth import AuthRoutes
from nexus.channels.cli.server import cli_routes
from nexus.channels.http import CLI_PREFIX, HttpOptions, build_http_app
from nexus.channels.mcp import McpChannel
from nexus.core.audit import Auditor
from nexus.core.auth.authenticator import CredentialAuthenticator, StepUp
from nexus.core.auth.model import FactorKind, SigningKey
from nexus.core.auth.policy import MfaPolicy, SessionPolicy, ThrottlePolicy
from nexus.core.auth.ports import EphemeralStore, SessionStore
from nexus.core.auth.service import IdentityParts, IdentityService
from nexus.core.auth.throttle import LoginThrottle
from nexus.core.authorization import AllowAll, Authorizer
from nexus.core.catalog import Catalog
from nexus.core.identity import (
    AnonymousAuthenticator,
    ApiKeyAuthenticator,
    Authenticator,
    IssuedKey,
    new_api_key,
)
from nexus.core.pipeline import Pipeline
from nexus.core.ports import Clock, CounterStore, Meter
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopMeter, SystemClock
from nexus.core.types import ApiKey, Channel
from nexus.errors import ConfigurationError, NexusError
from nexus.settings import Authz, Options, Settings
from nexus.workflow import AsyncLocalRuntime

VERSION = "0.1.0"
KEY_REFRESH_S = 30.0


@dataclass(eq=False)
class IdentityRuntime:
    """The identity side of a running app: the service, and what must be closed with it."""

    service: IdentityService
    closers: tuple[Callable[[], Awaitable[None]], ...]
    keys: SigningKeys
    api_keys_enabled: bool


@dataclass(eq=False)
class Assembly:
    """The live parts of one serving app (or of one admin operation when `serving` is off)."""

    loop: asyncio.AbstractEventLoop
    state: SqlState
    counters: CounterStore | None
    clock: SystemClock
    authenticator: Authenticator
    identity: IdentityRuntime | None = None
    pipeline: Pipeline | None = None
    mcp: McpChannel | None = None
    apps: tuple[Any, ...] = field(default=())

    @contextlib.asynccontextmanager
    async def channels_running(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as running:
            if self.mcp is not None:
                await running.enter_async_context(self.mcp.running())
            if self.identity is not None:
                # Keys rotated by another process or node are picked up within this interval.
                refresher = asyncio.create_task(self.identity.keys.keep_fresh(KEY_REFRESH_S))
                running.callback(refresher.cancel)
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
        try:
            if self.identity is not None:
                for close in self.identity.closers:
                    await close()
            if self.counters is not None:
                await self.counters.close()
        finally:
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
        if isinstance(self.authenticator, ApiKeyAuthenticator | CredentialAuthenticator):
            self.authenticator.forget(key_id)

    async def rotate_signing_key(self, algorithm: str) -> str:
        if self.identity is None:
            raise ConfigurationError("Token signing keys need enable_auth=True.")
        rotated: SigningKey = await self.identity.keys.rotate(algorithm)
        return rotated.kid

    def require_identity(self) -> IdentityService:
        if self.identity is None:
            raise ConfigurationError("Users and logins need enable_auth=True.")
        return self.identity.service


async def assemble(
    options: Options,
    settings: Settings,
    catalog: Catalog,
    *,
    serving: bool = True,
    authz: Authz | None = None,
) -> Assembly:
    """Open the backends and, when serving, build the pipeline and both channel apps."""
    clock = SystemClock()
    state = await open_state(options.state_url, audit_max_batch=settings.monitoring.audit_max_batch)
    assembly = Assembly(asyncio.get_running_loop(), state, None, clock, AnonymousAuthenticator())
    try:
        counters = None
        if options.rate_limit is not None or options.enable_auth:
            # One counter store (memory, or one Redis pool) for the rate limit and login throttling.
            from nexus.backends.counters import open_counter_store

            counters = assembly.counters = open_counter_store(options.redis_url)
        if options.enable_auth and counters is not None:
            identity = assembly.identity = await _open_identity(options, settings, state, clock, counters)
            keys = None
            if identity.api_keys_enabled:
                keys = ApiKeyAuthenticator(state.keys, clock, cache_ttl_s=settings.auth.api_key_cache_seconds)
            assembly.authenticator = CredentialAuthenticator(api_keys=keys, identity=identity.service)
        if serving:
            await _build_serving_parts(assembly, options, settings, catalog, authz or Authz())
    except BaseException:
        await assembly.close()
        raise
    return assembly


def api_base_url(options: Options) -> str:
    """The API port's URL as this app serves it (behind a proxy, the proxy's own URL differs)."""
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.api_port}"


async def _open_identity(
    options: Options, settings: Settings, state: SqlState, clock: SystemClock, counters: CounterStore
) -> IdentityRuntime:
    """Sessions, second factors, SSO and token keys, from `app.auth` (and Redis when configured)."""
    from nexus.backends.auth.passwords import Argon2Hasher
    from nexus.backends.auth.totp import TotpVerifier
    from nexus.backends.ephemeral import MemoryEphemeralStore

    auth = settings.auth
    provider = auth.provider
    closers: list[Callable[[], Awaitable[None]]] = []
    sessions: SessionStore = state.sessions
    ephemeral: EphemeralStore
    sso_state: EphemeralStore
    if options.redis_url is not None:
        from nexus.backends.redis_ephemeral import RedisEphemeralStore
        from nexus.backends.redis_sessions import RedisSessionStore

        redis_sessions = RedisSessionStore(options.redis_url)
        sessions = redis_sessions
        closers.append(redis_sessions.close)
        ephemeral = sso_state = RedisEphemeralStore(options.redis_url)
    else:
        ephemeral = MemoryEphemeralStore()
        # Anyone may start a sign-on: its pending state gets a store of its own, so a flood of
        # starts fills that one and never the locks, trust marks and challenges of logins.
        sso_state = MemoryEphemeralStore(max_entries=20_000)
        closers.append(sso_state.close)
    closers.append(ephemeral.close)
    # Login throttling counts failures apart from the request rate limit, always.
    mfa_config = auth.mfa
    if mfa_config is None and provider is not None and provider.enable_mfa:
        from nexus.enterprise.auth import MultiFactorAuth

        mfa_config = MultiFactorAuth()
    mfa = mfa_config.policy() if mfa_config is not None else MfaPolicy()
    if provider is not None and not provider.enable_mfa and auth.mfa is not None:
        raise ConfigurationError("app.auth.mfa is set but the provider says enable_mfa=False; pick one.")
    parts = await provider.open(sso_state, api_base_url(options)) if provider is not None else None
    if parts is not None and parts.directory is not None:
        closers.append(parts.directory.close)
    hardware = None
    if mfa_config is not None and FactorKind.HARDWARE_KEY in mfa.methods:
        from nexus.backends.auth.webauthn import WebAuthnSettings, WebAuthnVerifier

        # Without a configured relying party, keys register with this server as reached on
        # loopback ("localhost": WebAuthn allows no IP addresses as relying party ids).
        rp_id = mfa_config.rp_id or "localhost"
        origin = mfa_config.origin or f"http://localhost:{options.api_port}"
        hardware = WebAuthnVerifier(
            WebAuthnSettings(rp_id=rp_id, rp_name=mfa_config.rp_name, origins=(origin,))
        )
    sms = None
    if FactorKind.SMS in mfa.methods:
        from nexus.backends.auth.sms import MessageSink

        sms = (
            mfa_config.sms_sender
            if mfa_config is not None and mfa_config.sms_sender is not None
            else MessageSink()
        )
    keys = SigningKeys(
        state.signing_keys,
        clock,
        key_file=auth.signing_key_file,
        verify_retired_for=timedelta(seconds=auth.access_token_duration),
        leeway=timedelta(seconds=auth.token_leeway_seconds),
    )
    codec = await keys.open()
    identity_parts = IdentityParts(
        users=state.users,
        factors=state.factors,
        sessions=sessions,
        ephemeral=ephemeral,
        hasher=Argon2Hasher(time_cost=auth.password_time_cost, memory_kib=auth.password_memory_kib),
        tokens=codec,
        throttle=LoginThrottle(
            counters,
            ephemeral,
            clock,
            ThrottlePolicy(
                per_account=auth.login_failures_per_account, per_address=auth.login_failures_per_address
            ),
        ),
        directory=parts.directory if parts is not None else None,
        sso=parts.sso if parts is not None else {},
        otp=TotpVerifier(),
        hardware=hardware,
        sms=sms,
    )
    policy = SessionPolicy(
        issuer=auth.token_issuer,
        session_duration_s=float(auth.session_duration),
        access_token_s=float(auth.access_token_duration),
        cross_channel_sso=auth.cross_channel_sso,
        require_reauth_for=frozenset(auth.require_reauth_for),
        reauth_max_age_s=float(auth.reauth_max_age),
        cache_s=float(auth.session_cache_seconds),
    )
    service = IdentityService(identity_parts, clock, mfa=mfa, sessions=policy)
    return IdentityRuntime(
        service=service,
        closers=tuple(reversed(closers)),
        keys=keys,
        api_keys_enabled=provider is None or provider.enable_api_keys,
    )


def build_authorizer(authz: Authz, clock: Clock) -> Authorizer:
    """Allow-all until roles or policies are set; otherwise the one decision point of core."""
    if authz.rbac is None and authz.abac is None:
        return AllowAll()
    from nexus.core.policy.decision import PolicyAuthorizer

    abac = authz.abac
    return PolicyAuthorizer(
        authz.rbac.book if authz.rbac is not None else None,
        abac.policies if abac is not None else None,
        abac if abac is not None else clock,  # the engine's now(): its own clock when it has one
        abac.zone if abac is not None else UTC,
    )


async def _build_serving_parts(
    assembly: Assembly, options: Options, settings: Settings, catalog: Catalog, authz: Authz
) -> None:
    limiter: Limiter = NoLimit()
    counters = assembly.counters  # opened by assemble() whenever there is a rate limit or auth
    if counters is not None:
        await counters.ping()  # a configured Redis that does not answer is a start-up error
    if options.rate_limit is not None and counters is not None:
        limiter = RateLimiter(counters, options.rate_limit)
    prometheus = PrometheusMeter() if options.enable_monitoring else None
    meter: Meter = prometheus if prometheus is not None else NoopMeter()
    pipeline = Pipeline(
        catalog=catalog,
        authenticator=assembly.authenticator,
        authorizer=build_authorizer(authz, assembly.clock),
        limiter=limiter,
        auditor=Auditor(assembly.state.audit, assembly.clock),
        meter=meter,
        clock=assembly.clock,
        runtime=AsyncLocalRuntime(node_timeout_s=settings.api.node_timeout_seconds),
        encode=codec.dumps,
        step_up=StepUp(assembly.identity.service.policy, assembly.clock) if assembly.identity else None,
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
    from nexus.core.policy.explain import Explainer

    explainer = Explainer(
        catalog,
        lambda: pipeline.authorizer,  # the one in force: set_rbac_manager may replace it while serving
        assembly.clock,
        keys=assembly.state.keys,
        users=assembly.state.users if assembly.identity is not None else None,
    )
    extra = cli_routes(pipeline, http_options, explainer=explainer)
    identity = assembly.identity
    if identity is not None:
        hosts = frozenset(settings.auth.sso_return_hosts)
        for channel, prefix in ((Channel.API, ""), (Channel.CLI, CLI_PREFIX)):
            routes = AuthRoutes(
                pipeline, identity.service, channel, jwks=identity.keys.jwks, return_hosts=hosts
            )
            extra += routes.routes(prefix)
    api_app = build_http_app(pipeline, http_options, extra_routes=extra, explainer=explainer)
    mcp = McpChannel(
        pipeline,
        settings.mcp,
        auth_enabled=options.enable_auth,
        version=VERSION,
        host=options.host,
        is_ready=assembly.is_ready,
    )
    mcp.authorization_servers = (api_base_url(options),)
    assembly.pipeline, assembly.mcp, assembly.apps = pipeline, mcp, (api_app, mcp.asgi_app)
