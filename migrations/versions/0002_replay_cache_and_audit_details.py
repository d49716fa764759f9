"""replay cache and audit details

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replay_cache',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('replay_cache', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replay_cache_expires_at'), ['expires_at'], unique=False)

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authorization_details', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('authorization_details')

    with op.batch_alter_table('replay_cache', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replay_cache_expires_at'))

    op.drop_table('replay_cache')
