"""Tenant membership and tenant keys: the tenants of keys, users and sessions; the tenant of sessions
and audit records.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows written before this revision belong to no tenant: an empty JSON list, or NULL.
_NO_TENANTS = "[]"


def upgrade() -> None:
    """Add the columns (existing rows get no tenants) and the index of a tenant's newest records."""
    op.add_column("api_keys", sa.Column("tenants", sa.Text(), nullable=False, server_default=_NO_TENANTS))
    op.add_column("users", sa.Column("tenants", sa.Text(), nullable=False, server_default=_NO_TENANTS))
    op.add_column("sessions", sa.Column("tenant_id", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("tenants", sa.Text(), nullable=False, server_default=_NO_TENANTS))
    op.add_column("audit_records", sa.Column("tenant_id", sa.Text(), nullable=True))
    op.create_index("ix_audit_records_tenant_id_time", "audit_records", ["tenant_id", "time", "id"])


def downgrade() -> None:
    """Drop the index, then the columns (SQLite 3.35 or later drops a column in place)."""
    op.drop_index("ix_audit_records_tenant_id_time", table_name="audit_records")
    op.drop_column("audit_records", "tenant_id")
    op.drop_column("sessions", "tenants")
    op.drop_column("sessions", "tenant_id")
    op.drop_column("users", "tenants")
    op.drop_column("api_keys", "tenants")
