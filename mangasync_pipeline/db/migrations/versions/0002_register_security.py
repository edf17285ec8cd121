"""REGISTER security: no reader token at rest, used nonces shared by every server

Revision ID: 0002_register_security
Revises: 0001
Create Date: 2026-12-01 23:00:00

Readers' tokens were stored as they were printed. They are dropped here, not carried over:
tokens are now derived from the server's master key, so each existing reader needs a new one
from `mangasync users rotate-token NAME` (`mangasync migrate` says so, naming them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mangasync_pipeline.db.types

revision: str = "0002_register_security"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer(), nullable=True))
        batch.drop_column("token")
    op.create_table(
        "register_nonces",
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", mangasync_pipeline.db.types.UTCDateTime(timezone=True),
                  nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_register_nonces_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", "nonce", name=op.f("pk_register_nonces")),
    )
    op.create_index(op.f("ix_register_nonces_expires_at"), "register_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_register_nonces_expires_at"), table_name="register_nonces")
    op.drop_table("register_nonces")
    # The old column held the secret itself; nothing can be restored into it.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token", sa.String(length=128), nullable=False,
                                   server_default=""))
        batch.drop_column("token_version")
