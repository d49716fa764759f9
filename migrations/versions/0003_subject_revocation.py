"""subject revocation

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('revoked_subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sub', sa.String(length=400), nullable=False),
    sa.Column('sub_sha256', sa.String(length=64), nullable=False),
    sa.Column('revoked_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('revoked_subjects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revoked_subjects_revoked_at'), ['revoked_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_revoked_subjects_sub'), ['sub'], unique=False)

    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revoked_tokens_revoked_at'), ['revoked_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revoked_tokens_revoked_at'))

    with op.batch_alter_table('revoked_subjects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revoked_subjects_sub'))
        batch_op.drop_index(batch_op.f('ix_revoked_subjects_revoked_at'))

    op.drop_table('revoked_subjects')
