"""SQL state backend (SQLite file by default, PostgreSQL for clusters) behind `open_state(url)`.

Imports SQLAlchemy, aiosqlite, asyncpg and Alembic; the core never imports this package.
"""

from nexus.backends.sql.audit_sink import AuditSinkStats, SqlAuditSink
from nexus.backends.sql.engine import DEFAULT_STATE_URL
from nexus.backends.sql.key_store import SqlKeyStore
from nexus.backends.sql.state import SqlState, open_state

__all__ = ["DEFAULT_STATE_URL", "AuditSinkStats", "SqlAuditSink", "SqlKeyStore", "SqlState", "open_state"]
