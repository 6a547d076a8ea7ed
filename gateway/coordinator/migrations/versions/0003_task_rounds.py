"""Iterative tasks: a task's current round and central state; a run per (task, node,
round) with its own node parameters.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("state", sa.JSON(), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("parameters", sa.JSON(), nullable=True))
        # Same name by the naming convention (first column), now over three columns.
        batch_op.drop_constraint("uq_runs_task_id", type_="unique")
        batch_op.create_unique_constraint("uq_runs_task_id", ["task_id", "node_id", "round"])


def downgrade() -> None:
    # Only the first round of each task survives: the old constraint allows one run.
    op.execute("DELETE FROM runs WHERE round > 0")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_runs_task_id", type_="unique")
        batch_op.create_unique_constraint("uq_runs_task_id", ["task_id", "node_id"])
        batch_op.drop_column("parameters")
        batch_op.drop_column("round")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("state")
        batch_op.drop_column("round")
