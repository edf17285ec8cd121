"""notification labels and manual sync requests

Revision ID: 0003_triggers
Revises: 0002_register_security
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mangasync_pipeline.db.types

revision: str = "0003_triggers"
down_revision: str | None = "0002_register_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=32), nullable=True))
    op.create_table(
        "manual_sync_requests",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("manga_ref", sa.String(length=200), nullable=False),
        sa.Column("mangadex_id", sa.String(length=36), nullable=False),
        sa.Column("manga_id", _ID, nullable=True),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", mangasync_pipeline.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", mangasync_pipeline.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_sync_requests")),
    )
    with op.batch_alter_table("manual_sync_requests", schema=None) as batch_op:
        batch_op.create_index("ix_manual_sync_requests_status", ["status", "id"], unique=False)
        batch_op.create_index("ix_manual_sync_requests_mangadex_id", ["mangadex_id", "status"],
                              unique=False)
        batch_op.create_index("ix_manual_sync_requests_caller", ["caller", "created_at"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("manual_sync_requests")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("label")
