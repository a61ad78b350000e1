"""The audit trail's hash chain: a sequence number, the previous record's hash and the record's own
hash on each audit record, and one `audit_chain` row holding the chain's anchor and newest link.

Records already stored keep NULL there: the chain starts after them, and `audit_chain` says up to
which id records are unchained.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64  # the "previous hash" of a chain's first record


def upgrade() -> None:
    """Add the columns and the chain's row; the chain starts after the records already stored."""
    op.add_column("audit_records", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_records", sa.Column("prev_hash", sa.Text(), nullable=True))
    op.add_column("audit_records", sa.Column("hash", sa.Text(), nullable=True))
    op.create_index("ux_audit_records_seq", "audit_records", ["seq"], unique=True)
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("anchor_seq", sa.BigInteger(), nullable=False),
        sa.Column("anchor_hash", sa.Text(), nullable=False),
        sa.Column("tail_seq", sa.BigInteger(), nullable=False),
        sa.Column("tail_hash", sa.Text(), nullable=False),
        sa.Column("unchained_through_id", sa.BigInteger(), nullable=False),
    )
    op.execute(
        sa.text(
            "INSERT INTO audit_chain "
            "(id, anchor_seq, anchor_hash, tail_seq, tail_hash, unchained_through_id) "
            "SELECT 1, 0, :genesis, 0, :genesis, COALESCE(MAX(id), 0) FROM audit_records"
        ).bindparams(genesis=_GENESIS)
    )


def downgrade() -> None:
    """Forget the chain: the table, the index and the columns go (the records stay)."""
    op.drop_table("audit_chain")
    op.drop_index("ux_audit_records_seq", table_name="audit_records")
    op.drop_column("audit_records", "hash")
    op.drop_column("audit_records", "prev_hash")
    op.drop_column("audit_records", "seq")
