"""The audit trail's hash chain: a sequence number, the previous record's hash and the record's own
hash on each audit record, and one `audit_chain` row holding the chain's anchor and newest link.

Records already stored are chained here, in id order, so every record is covered: a record
without a sequence number is one no audit writer of this version stored, and breaks verification.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from nexus.core.audit_chain import FIELDS, GENESIS_HASH, extend

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 1000  # records chained per read and per update
# The records as 0006 left them; the time typed so both dialects give back a datetime.
_records = sa.table(
    "audit_records",
    sa.column("id", sa.BigInteger()),
    sa.column("seq", sa.BigInteger()),
    sa.column("prev_hash", sa.Text()),
    sa.column("hash", sa.Text()),
    *(sa.column(name, sa.DateTime(timezone=True) if name == "time" else None) for name in FIELDS),
)


def upgrade() -> None:
    """Add the columns and the chain's row, and chain the records already stored."""
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
    )
    tail_seq, tail_hash = _chain_stored_records(op.get_bind())
    op.execute(
        sa.text(
            "INSERT INTO audit_chain (id, anchor_seq, anchor_hash, tail_seq, tail_hash) "
            "VALUES (1, 0, :genesis, :tail_seq, :tail_hash)"
        ).bindparams(genesis=GENESIS_HASH, tail_seq=tail_seq, tail_hash=tail_hash)
    )


def _chain_stored_records(connection: sa.Connection) -> tuple[int, str]:
    """Link every stored record, in id order, as the audit writers would have; the newest link."""
    fields = [_records.c[name] for name in FIELDS]
    page = sa.select(_records.c.id, *fields).order_by(_records.c.id).limit(_PAGE)
    link = (
        sa.update(_records)
        .where(_records.c.id == sa.bindparam("record_id"))
        .values(
            seq=sa.bindparam("new_seq"), prev_hash=sa.bindparam("new_prev"), hash=sa.bindparam("new_hash")
        )
    )
    seq, prev = 0, GENESIS_HASH
    last_id: int | None = None
    while True:
        rows = connection.execute(page if last_id is None else page.where(_records.c.id > last_id)).all()
        if not rows:
            return seq, prev
        chained = extend(seq, prev, (tuple(row)[1:] for row in rows))
        connection.execute(
            link,
            [
                {"record_id": row.id, "new_seq": new_seq, "new_prev": new_prev, "new_hash": new_hash}
                for row, (new_seq, new_prev, new_hash) in zip(rows, chained, strict=True)
            ],
        )
        seq, _, prev = chained[-1]
        last_id = rows[-1].id


def downgrade() -> None:
    """Forget the chain: the table, the index and the columns go (the records stay)."""
    op.drop_table("audit_chain")
    op.drop_index("ux_audit_records_seq", table_name="audit_records")
    op.drop_column("audit_records", "hash")
    op.drop_column("audit_records", "prev_hash")
    op.drop_column("audit_records", "seq")
