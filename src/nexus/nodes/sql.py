"""`AsyncSQLDatabaseNode`: one SQL statement over SQLAlchemy async (aiosqlite, asyncpg).

Values always travel as bind parameters; `${name}` templates in SQL text may only stand for identifiers.
Engines are pooled per URL and event loop in a module cache; `dispose_engines()` closes them.
With `tenant_isolation`, a statement runs only in a tenant-scoped call, as the tenant (see `_enter_tenant`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from sqlalchemy import TextClause, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from nexus.core.tenancy.context import TenantContext, tenant_context_of
from nexus.errors import DependencyUnavailableError, WorkflowDefinitionError, WorkflowFailedError
from nexus.workflow import Node, Param
from nexus.workflow.template import fill_template, template_names

Fetch = Literal["all", "one", "none"]
_ASYNC_DRIVERS: Mapping[str, str] = MappingProxyType(
    {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "postgresql+psycopg2": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
)
# Keyed by loop too: pooled connections belong to the event loop that opened them.
_engines: dict[tuple[asyncio.AbstractEventLoop, str], AsyncEngine] = {}
_closing: set[asyncio.Task[None]] = set()
_MAX_ENGINES = 32
_log = logging.getLogger("nexus.nodes.sql")
# A statement counts as a read only if it starts like one and, outside literals and comments, holds
# no word that writes (SELECT ... INTO creates a table; a WITH may wrap an INSERT). Doubt means write.
_NOT_CODE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)
_READ_START = re.compile(r"[\s(]*(?:SELECT|WITH|VALUES|TABLE|SHOW)\b", re.IGNORECASE)
_WRITE_WORD = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|INTO|CREATE|ALTER|DROP|TRUNCATE|COPY|CALL|DO|GRANT|REFRESH)\b",
    re.IGNORECASE,
)
_INSUFFICIENT_PRIVILEGE = "42501"
# set_config(..., true) is SET LOCAL with the value as a bind parameter.
_SET_TENANT = text("SELECT set_config('nexus.tenant_id', :tenant_id, true)")
_SET_TENANT_AND_PATH = text(
    "SELECT set_config('nexus.tenant_id', :tenant_id, true), set_config('search_path', :search_path, true)"
)


def to_async_url(connection_string: str) -> URL:
    """Parse a database URL and switch it to its async driver."""
    try:
        url = make_url(connection_string)
    except ArgumentError as exc:
        raise WorkflowDefinitionError(f"invalid connection_string: {exc}") from exc
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        supported = ", ".join(sorted({name.split("+")[0] for name in _ASYNC_DRIVERS}))
        raise WorkflowDefinitionError(f"unsupported database '{url.drivername}' (supported: {supported})")
    return url.set(drivername=driver)


def is_read_only(query: str) -> bool:
    """Whether `query` surely only reads (a conservative guess: a false answer costs a quota check)."""
    code = _NOT_CODE.sub(" ", query)
    return _READ_START.match(code) is not None and _WRITE_WORD.search(code) is None


def engine_for(url: URL) -> AsyncEngine:
    """Return the pooled engine for `url` on the running loop, creating it once.

    At most `_MAX_ENGINES` stay open: a `${name}` in the database part can make inputs choose the
    URL, and every distinct one would otherwise keep a connection pool forever.
    """
    loop = asyncio.get_running_loop()
    key = (loop, url.render_as_string(hide_password=False))
    engine = _engines.pop(key, None)
    if engine is None:
        for stale in [k for k in _engines if k[0].is_closed()]:
            del _engines[stale]
        engine = create_async_engine(url, hide_parameters=True)
    _engines[key] = engine  # most recently used last
    while len(_engines) > _MAX_ENGINES:
        oldest_key = next(iter(_engines))
        oldest = _engines.pop(oldest_key)
        if oldest_key[0] is loop:
            closing = loop.create_task(oldest.dispose())
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)
    return engine


async def dispose_engines() -> None:
    """Close every pooled engine opened on the running event loop."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _engines if k[0] is loop]:
        await _engines.pop(key).dispose()


class AsyncSQLDatabaseNode(Node):
    """Run `query` against `connection_string`; outputs `{"rows": [dict, ...], "row_count": n}`.

    Inputs: one per `:name` bind in the query, one per `${name}` template, and an optional `params`
    dict of binds. `fetch` is "all" (default), "one" (at most one row) or "none" (writes; `row_count`
    is the number of rows affected).

    `tenant_isolation=True`: the run fails closed outside a tenant-scoped call; `${tenant_id}` and a
    `:tenant_id` bind are the call's tenant, and an input (or `params` entry) named `tenant_id` is
    refused. On PostgreSQL the statement runs in a transaction as the tenant: its role and schema
    when it has them (strict), and `current_setting('nexus.tenant_id')` for row-level security. A
    write is first checked against the tenant's storage quota.
    """

    outputs: ClassVar[tuple[str, ...]] = ("rows", "row_count")
    config_keys: ClassVar[frozenset[str]] = frozenset(
        {"connection_string", "query", "fetch", "tenant_isolation"}
    )

    def configure(self) -> None:
        connection_string = self._required_string("connection_string")
        self._query = self._required_string("query")
        self._fetch: Fetch = self.config.get("fetch", "all")
        if self._fetch not in ("all", "one", "none"):
            raise self._definition_error(f"fetch must be 'all', 'one' or 'none', not {self._fetch!r}")
        try:
            self._url = to_async_url(connection_string)
        except WorkflowDefinitionError as exc:
            raise self._definition_error(exc.message) from exc
        database = self._url.database or ""
        if connection_string.count("${") != database.count("${"):
            raise self._definition_error("templates in connection_string may only name the database")
        self._templates = template_names(self._query) + template_names(database)
        self._clause: TextClause | None = None if template_names(self._query) else text(self._query)
        self._binds = tuple(text(self._query).compile().params)
        specs = {name: Param(object, required=False) for name in self._binds}
        specs.update({name: Param(str, required=False) for name in self._templates})
        specs["params"] = Param(Mapping, required=False)
        self._tenant_isolation = self._configure_tenancy()
        if self._tenant_isolation:
            # Accepted only to be refused: a tenant id among the inputs is an attack, not a typo.
            specs["tenant_id"] = Param(object, required=False)
        self._writes = self._fetch == "none" or not is_read_only(self._query)
        self._specs: Mapping[str, Param] = MappingProxyType(specs)

    def _configure_tenancy(self) -> bool:
        isolation = self.config.get("tenant_isolation", False)
        if not isinstance(isolation, bool):
            raise self._definition_error("tenant_isolation must be true or false")
        params = self.config.get("params")
        if isolation and (
            "tenant_id" in self.config or (isinstance(params, Mapping) and "tenant_id" in params)
        ):
            raise self._definition_error(
                "with tenant_isolation the tenant id comes from the call's tenant, never from config"
            )
        return isolation

    def _required_string(self, key: str) -> str:
        value = self.config.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self._definition_error(f"'{key}' must be a non-empty string")
        return value

    def _definition_error(self, problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(
            f"node '{self.node_id}' (AsyncSQLDatabaseNode): {problem}", node_id=self.node_id
        )

    def input_specs(self) -> Mapping[str, Param]:
        return self._specs

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        tenant = self._tenant(supplied, context) if self._tenant_isolation else None
        inputs = self.resolve_inputs(supplied, context)
        # Context wins over inputs: a caller must not choose another tenant's schema or database.
        values = {**inputs, **context}
        if tenant is not None:
            self._check_identifiers(inputs)
            values["tenant_id"] = tenant["tenant_id"]
        clause = self._clause if self._clause is not None else text(self._fill(self._query, values))
        url = self._url
        if url.database and "${" in url.database:
            url = url.set(database=self._fill(url.database, values))
        binds = self._bind_values(inputs)
        if tenant is not None:
            self._check_placement(url, tenant)
            if "tenant_id" in self._binds:
                binds["tenant_id"] = tenant["tenant_id"]
            if self._writes and tenant.storage is not None:
                await tenant.storage.check_write()
        engine = engine_for(url)
        connection = engine.connect()
        try:
            await connection.start()
        except (OSError, SQLAlchemyError) as exc:
            cause = type(getattr(exc, "orig", None) or exc).__name__
            # Callers learn which node failed and why; the database's address stays in the log.
            _log.warning(
                "node %r cannot connect to %s", self.node_id, url.render_as_string(hide_password=True)
            )
            raise DependencyUnavailableError(
                f"node '{self.node_id}': cannot connect to its database ({cause})", node_id=self.node_id
            ) from exc
        try:
            return await self._run(connection, clause, binds, tenant)
        finally:
            await connection.close()

    def _tenant(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> TenantContext:
        """The call's tenant; an input naming a tenant is refused, and no tenant fails the run."""
        params = supplied.get("params")
        if "tenant_id" in supplied or (isinstance(params, Mapping) and "tenant_id" in params):
            raise self.input_error(
                "tenant_id", "refused: the tenant comes from how the call arrived, never from its inputs"
            )
        tenant = tenant_context_of(context)
        if tenant is None:
            raise WorkflowFailedError(
                f"node '{self.node_id}' failed: tenant_isolation is set and the call has no tenant "
                "(run it as a tenant-scoped workflow, on a tenant's route)",
                node_id=self.node_id,
            )
        tenant.note_access(self.node_id)
        return tenant

    def _check_placement(self, url: URL, tenant: TenantContext) -> None:
        placement = tenant.placement
        postgres = url.get_backend_name() == "postgresql"
        if placement.role is not None and not postgres:
            raise WorkflowFailedError(
                f"node '{self.node_id}' failed: strict tenant isolation needs PostgreSQL",
                node_id=self.node_id,
            )
        if placement.database is not None and url.database != placement.database:
            raise WorkflowFailedError(
                f"node '{self.node_id}' failed: the tenant's data lives in a database of its own, "
                "which connection_string must name (for example '.../${tenant_id}_database')",
                node_id=self.node_id,
            )

    def _check_identifiers(self, inputs: Mapping[str, Any]) -> None:
        """A caller's identifier never names PostgreSQL's catalog: it is on every search path, and
        would list other tenants' schemas and tables (`${table}` = pg_tables)."""
        for name in self._templates:
            value = inputs.get(name)
            if isinstance(value, str) and (
                value.lower().startswith("pg_") or value.lower() == "information_schema"
            ):
                raise self.input_error(name, "a tenant's statement cannot name PostgreSQL's own catalog")

    def _fill(self, sql_text: str, values: Mapping[str, Any]) -> str:
        return fill_template(sql_text, values, identifiers_only=True, node_id=self.node_id)

    def _bind_values(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(inputs.get("params") or {})
        unknown = sorted(set(params) - set(self._binds))
        if unknown:
            raise self.input_error("params", f"no bind parameter :{unknown[0]} in the query")
        params.update({name: inputs[name] for name in self._binds if name in inputs})
        for name in self._binds:
            if name not in params and not (name == "tenant_id" and self._tenant_isolation):
                raise self.input_error(name, "required by the query's bind parameter")
        return params

    async def _run(
        self,
        connection: AsyncConnection,
        clause: TextClause,
        binds: Mapping[str, Any],
        tenant: TenantContext | None,
    ) -> dict[str, Any]:
        try:
            if tenant is not None and connection.dialect.name == "postgresql":
                await self._enter_tenant(connection, tenant)
            result = await connection.execute(clause, dict(binds))
            if self._fetch == "none":
                rows: list[dict[str, Any]] = []
                row_count = result.rowcount
            else:
                mappings = result.mappings()
                found = mappings.all() if self._fetch == "all" else mappings.fetchmany(1)
                rows = [dict(row) for row in found]
                row_count = len(rows)
            await connection.commit()
        except DBAPIError as exc:
            # The original driver error only: SQLAlchemy's own message repeats the bound values.
            problem = f"{type(exc.orig).__name__}: {exc.orig}"
            if exc.connection_invalidated:
                raise DependencyUnavailableError(
                    f"node '{self.node_id}': database connection lost ({problem})", node_id=self.node_id
                ) from exc
            if tenant is not None and getattr(exc.orig, "sqlstate", None) == _INSUFFICIENT_PRIVILEGE:
                problem = "permission denied: the statement reaches beyond its tenant's data"
            raise WorkflowFailedError(
                f"node '{self.node_id}' failed: {problem}", node_id=self.node_id
            ) from exc
        return {"rows": rows, "row_count": row_count}

    @staticmethod
    async def _enter_tenant(connection: AsyncConnection, tenant: TenantContext) -> None:
        """Make the rest of this transaction the tenant's (SET LOCAL ends with it, pooled or not).

        Under strict isolation the statement runs as the tenant's role with its schema as the
        search path, so PostgreSQL itself refuses any other tenant's schema. At every level
        `nexus.tenant_id` holds the tenant's id for row-level-security policies to read.
        """
        placement = tenant.placement
        if placement.role is None or placement.schema is None:
            await connection.execute(_SET_TENANT, {"tenant_id": tenant["tenant_id"]})
            return
        quote = connection.dialect.identifier_preparer.quote_identifier
        await connection.execute(text(f"SET LOCAL ROLE {quote(placement.role)}"))
        await connection.execute(
            _SET_TENANT_AND_PATH, {"tenant_id": tenant["tenant_id"], "search_path": quote(placement.schema)}
        )

    @classmethod
    async def release_loop_resources(cls) -> None:
        await dispose_engines()
