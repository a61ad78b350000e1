"""Alembic environment: runs revisions on the connection that `migration.upgrade` hands over.

That caller holds the transaction (and on PostgreSQL the advisory lock), so nothing here connects.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from nexus.backends.sql.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "Nexus migrations run on a connection from nexus.backends.sql.open_state(url); "
        "open the state store instead of running this environment directly"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
