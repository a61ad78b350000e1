"""Alembic scripts of the state store, applied by `nexus.backends.sql.migration.upgrade`."""
