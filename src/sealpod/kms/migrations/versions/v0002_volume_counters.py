"""Volume version counters held by the KMS (compare-and-swap, see sealpod.kms.volumes).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_volume_counters",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("volume_id", sa.String(32), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kms_volume_counters")
