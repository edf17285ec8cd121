"""manga.content_rating, so the operator's report can count the catalogue by rating

Revision ID: 0004_content_rating
Revises: 0003_triggers
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_content_rating"
down_revision: str | None = "0003_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: manga catalogued before this revision get theirs at their next sync.
    with op.batch_alter_table("manga", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_rating", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("manga", schema=None) as batch_op:
        batch_op.drop_column("content_rating")
