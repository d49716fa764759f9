"""An index on the audit trail's (reason, time), for the overview's rate-limited count and reason filters

Without it, counting the last hour's rate-limited refusals reads every record of the hour (or, where
the planner prefers, every record of the trail) and filters them; with it, only the matching records.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_events_reason_time', 'audit_events', ['reason', 'time'])


def downgrade() -> None:
    op.drop_index('ix_audit_events_reason_time', table_name='audit_events')
