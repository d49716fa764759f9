"""initial schema

Revision ID: 0001
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('idp', sa.String(length=100), nullable=True),
    sa.Column('sub', sa.String(length=400), nullable=True),
    sa.Column('client_id', sa.String(length=100), nullable=True),
    sa.Column('actor', sa.JSON(), nullable=True),
    sa.Column('tool', sa.String(length=100), nullable=True),
    sa.Column('requested_scopes', sa.String(length=2000), nullable=True),
    sa.Column('granted_scopes', sa.String(length=2000), nullable=True),
    sa.Column('policy_version', sa.Integer(), nullable=True),
    sa.Column('rule_id', sa.String(length=100), nullable=True),
    sa.Column('jti', sa.String(length=64), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('client_addr', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('jti')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_sub'), ['sub'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_time'), ['time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_tool'), ['tool'], unique=False)

    op.create_table('clients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('secret_hash', sa.String(length=128), nullable=True),
    sa.Column('auth_methods', sa.JSON(), nullable=False),
    sa.Column('jwks', sa.JSON(), nullable=True),
    sa.Column('resource_uri', sa.String(length=1000), nullable=False),
    sa.Column('max_lifetime', sa.Integer(), nullable=True),
    sa.Column('may_chain', sa.Boolean(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id'),
    sa.UniqueConstraint('resource_uri')
    )
    op.create_table('config_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(sa.table('config_state', sa.column('id', sa.Integer), sa.column('generation', sa.BigInteger)), [{'id': 1, 'generation': 0}])
    op.create_table('identity_providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('namespace', sa.String(length=100), nullable=False),
    sa.Column('jwks_uri', sa.String(length=1000), nullable=True),
    sa.Column('jwks', sa.JSON(), nullable=True),
    sa.Column('algorithms', sa.JSON(), nullable=False),
    sa.Column('subject_claim', sa.String(length=100), nullable=False),
    sa.Column('groups_claim', sa.String(length=100), nullable=False),
    sa.Column('attribute_claims', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('issuer'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('namespace')
    )
    op.create_table('policy_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('canonical', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('revoked_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('jti')
    )
    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revoked_tokens_expires_at'), ['expires_at'], unique=False)

    op.create_table('tools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('resource_uri', sa.String(length=1000), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('resource_uri')
    )
    op.create_table('client_tools',
    sa.Column('client_pk', sa.Integer(), nullable=False),
    sa.Column('tool_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tool_id'], ['tools.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_pk', 'tool_id')
    )
    op.create_table('tool_scopes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tool_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['tool_id'], ['tools.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tool_id', 'name')
    )
    with op.batch_alter_table('tool_scopes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tool_scopes_tool_id'), ['tool_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tool_scopes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tool_scopes_tool_id'))

    op.drop_table('tool_scopes')
    op.drop_table('client_tools')
    op.drop_table('tools')
    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revoked_tokens_expires_at'))

    op.drop_table('revoked_tokens')
    op.drop_table('policy_versions')
    op.drop_table('identity_providers')
    op.drop_table('config_state')
    op.drop_table('clients')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_tool'))
        batch_op.drop_index(batch_op.f('ix_audit_events_time'))
        batch_op.drop_index(batch_op.f('ix_audit_events_sub'))
        batch_op.drop_index(batch_op.f('ix_audit_events_client_id'))

    op.drop_table('audit_events')
