"""quarantined_records: MangaDex records skipped by the boundary checks, shown and read again

Revision ID: 0005_quarantine
Revises: 0004_content_rating
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mangasync_pipeline.db.types

revision: str = "0005_quarantine"
down_revision: str | None = "0004_content_rating"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "quarantined_records",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("mangadex_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen", mangasync_pipeline.db.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen", mangasync_pipeline.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_records")),
        sa.UniqueConstraint("source", "mangadex_id", name="uq_quarantined_records_source"),
    )
    with op.batch_alter_table("quarantined_records", schema=None) as batch_op:
        batch_op.create_index("ix_quarantined_records_last_seen", ["source", "last_seen"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("quarantined_records")
