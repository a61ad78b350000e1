"""Create the tenants table: the tenant registry, with each route unique.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table with one unique constraint per route."""
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("api_subdomain", sa.Text(), nullable=True),
        sa.Column("cli_prefix", sa.Text(), nullable=True),
        sa.Column("mcp_port", sa.Integer(), nullable=True),
        sa.UniqueConstraint("api_subdomain", name="uq_tenants_api_subdomain"),
        sa.UniqueConstraint("cli_prefix", name="uq_tenants_cli_prefix"),
        sa.UniqueConstraint("mcp_port", name="uq_tenants_mcp_port"),
    )


def downgrade() -> None:
    """Drop the table (its constraints go with it)."""
    op.drop_table("tenants")
