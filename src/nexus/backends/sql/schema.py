"""The state store's tables as SQLAlchemy Core, and the UTC datetime column type.

Migrations under `migrations/versions` create exactly these tables; a unit test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


def require_aware(value: datetime, what: str) -> datetime:
    """Return `value` in UTC; a naive datetime is ambiguous and rejected."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def sqlite_time_text(value: datetime) -> str:
    """The text `UtcDateTime` stores in SQLite for `value` (naive UTC, as SQLAlchemy's SQLite
    DATETIME writes it), without going through the type's bind processors: for the audit hot path."""
    return require_aware(value, "a stored time").replace(tzinfo=None).isoformat(" ", "microseconds")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out; SQLite stores them as naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = require_aware(value, "a stored time")
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime column value, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def keep_first(column: Any, at: datetime) -> Any:
    """`column` set to `at` unless it already holds a time: a revocation or retirement made twice
    keeps the first, in one statement, so concurrent callers can neither lose it nor move it."""
    return func.coalesce(column, literal(require_aware(at, "at"), UtcDateTime))


api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    # A JSON list of tenant ids; columns of this kind default to [] for rows older than them.
    Column("tenants", Text, nullable=False, server_default="[]"),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("time", UtcDateTime, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("principal_id", Text, nullable=False),
    Column("workflow", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("error_code", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("client_addr", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("tenant_id", Text, nullable=True),
    # The hash chain (see nexus.core.audit_chain); NULL only on a record no audit writer chained.
    Column("seq", BigInteger, nullable=True),
    Column("prev_hash", Text, nullable=True),
    Column("hash", Text, nullable=True),
    Index("ix_audit_records_time", "time"),
    Index("ix_audit_records_workflow", "workflow"),
    Index("ix_audit_records_principal_id", "principal_id"),
    # A tenant's newest records in query order (time, then id) straight from the index.
    Index("ix_audit_records_tenant_id_time", "tenant_id", "time", "id"),
    Index("ux_audit_records_seq", "seq", unique=True),
    # AUTOINCREMENT keeps ids increasing after deletes, so id breaks ties in time order.
    sqlite_autoincrement=True,
)

CHAIN_ROW = 1
"""The one row of `audit_chain`."""

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # The last purged record (sequence number and hash): verification starts after it.
    Column("anchor_seq", BigInteger, nullable=False),
    Column("anchor_hash", Text, nullable=False),
    # The newest record: the next one links to it; its row is locked while a batch extends the chain.
    Column("tail_seq", BigInteger, nullable=False),
    Column("tail_hash", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("username", Text, nullable=False),
    Column("username_key", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("attributes", Text, nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("phone", Text, nullable=True),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("tenants", Text, nullable=False, server_default="[]"),
    UniqueConstraint("username_key", name="uq_users_username_key"),
)

mfa_factors = Table(
    "mfa_factors",
    metadata,
    Column("factor_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("credential_id", Text, nullable=True),
    Column("sign_count", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Index("ix_mfa_factors_user_id", "user_id"),
    UniqueConstraint("credential_id", name="uq_mfa_factors_credential_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("attributes", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("auth_time", UtcDateTime, nullable=False),
    Column("origin_channel", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("mfa_time", UtcDateTime, nullable=True),
    Column("mfa_channels", Text, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("tenant_id", Text, nullable=True),
    Column("tenants", Text, nullable=False, server_default="[]"),
    Index("ix_sessions_user_id", "user_id"),
    Index("ix_sessions_expires_at", "expires_at"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("algorithm", Text, nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime, nullable=True),
)

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("suspended_at", UtcDateTime, nullable=True),
    # Copies of the routes in `config`, so the database itself refuses two tenants on one route.
    Column("api_subdomain", Text, nullable=True),
    Column("cli_prefix", Text, nullable=True),
    Column("mcp_port", Integer, nullable=True),
    # A JSON list of the workflow names shared with the tenant.
    Column("shared_workflows", Text, nullable=False, server_default="[]"),
    # When the tenant was deleted: the row stays so the id is never reused; its routes are freed.
    Column("deleted_at", UtcDateTime, nullable=True),
    UniqueConstraint("api_subdomain", name="uq_tenants_api_subdomain"),
    UniqueConstraint("cli_prefix", name="uq_tenants_cli_prefix"),
    UniqueConstraint("mcp_port", name="uq_tenants_mcp_port"),
)
