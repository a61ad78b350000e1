"""Workflow sharing: the tenant-scoped workflows shared with each tenant, a JSON list of names.

Revision ID: 0005
Revises: 0004
Create Date: 2025-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tenants made before this revision have had nothing shared with them.
_NOTHING_SHARED = "[]"


def upgrade() -> None:
    """Add the column; existing tenants get an empty list."""
    op.add_column(
        "tenants", sa.Column("shared_workflows", sa.Text(), nullable=False, server_default=_NOTHING_SHARED)
    )


def downgrade() -> None:
    """Drop the column (SQLite 3.35 or later drops a column in place)."""
    op.drop_column("tenants", "shared_workflows")
