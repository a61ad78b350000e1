"""Tenant tombstones: a deleted tenant's row stays, marked deleted, so its id is never reused.

Credentials, sessions and audit records name tenants by id; a new tenant under a deleted one's id
would inherit them. Its routes are freed (set to NULL) for other tenants.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column; every existing tenant is a live one."""
    op.add_column("tenants", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Forget the tombstones (their ids become free again), then drop the column."""
    op.execute("DELETE FROM tenants WHERE deleted_at IS NOT NULL")
    op.drop_column("tenants", "deleted_at")
