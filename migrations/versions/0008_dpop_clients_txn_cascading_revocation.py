"""DPoP-required clients, transaction ids and parent links in the audit trail, client revocation, feed version

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_required', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('txn', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('parent_jti', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_audit_events_txn', ['txn'])
        batch_op.create_index('ix_audit_events_parent_jti', ['parent_jti'])
    op.create_table(
        'revoked_clients',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=100), nullable=False),
        sa.Column('revoked_before', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_by', sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_revoked_clients_client_id', 'revoked_clients', ['client_id'])
    op.create_index('ix_revoked_clients_revoked_at', 'revoked_clients', ['revoked_at'])
    state = op.create_table(
        'revocation_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(state, [{'id': 1, 'version': 0}])


def downgrade() -> None:
    op.drop_table('revocation_state')
    op.drop_index('ix_revoked_clients_revoked_at', table_name='revoked_clients')
    op.drop_index('ix_revoked_clients_client_id', table_name='revoked_clients')
    op.drop_table('revoked_clients')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_parent_jti')
        batch_op.drop_index('ix_audit_events_txn')
        batch_op.drop_column('parent_jti')
        batch_op.drop_column('txn')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('dpop_required')
