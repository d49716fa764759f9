"""audit argument redaction

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redact_arguments', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('hash_arguments', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tools', schema=None) as batch_op:
        batch_op.drop_column('hash_arguments')
        batch_op.drop_column('redact_arguments')

