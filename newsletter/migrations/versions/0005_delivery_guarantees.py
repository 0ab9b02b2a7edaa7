"""delivery guarantees: unknown outcomes, failure kinds, repeat campaigns, late answers, sending time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure_kind", sa.String(length=12), nullable=False, server_default=""))
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("repeat", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("late_results", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("running_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sending_seconds", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("sending_seconds")
        batch_op.drop_column("running_since")
        batch_op.drop_column("late_results")
        batch_op.drop_column("repeat")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("failure_kind")
