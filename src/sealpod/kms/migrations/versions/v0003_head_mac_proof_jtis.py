"""The audit head row gets a MAC (under the audit key), so the head cannot be rewound to an
earlier record by someone who can write the database but does not hold the master key; and a
table of the DPoP proofs already used (``kms_proof_jtis``), so a proof is accepted once.

A migration cannot compute the MAC (it has no key): existing rows get NULL, which
``kms audit --verify`` reports as ``head_mac`` until the next audited action (every server
start unseals and appends one) writes the head with its MAC.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kms_audit_head") as batch:
        batch.add_column(sa.Column("mac", sa.LargeBinary(), nullable=True))
    op.create_table(
        "kms_proof_jtis",
        sa.Column("jti_hash", sa.LargeBinary(), primary_key=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_kms_proof_jtis_expires_ms", "kms_proof_jtis", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_kms_proof_jtis_expires_ms", table_name="kms_proof_jtis")
    op.drop_table("kms_proof_jtis")
    with op.batch_alter_table("kms_audit_head") as batch:
        batch.drop_column("mac")
