"""Client images: run statuses of image runs, their phase, the nodes' approvals as
mirrored by their agents, and decisions made at the coordinator for the nodes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_RUN = "status IN ('pending', 'started', 'completed', 'failed', 'expired', 'cancelled')"
NEW_RUN = (
    "status IN ('pending', 'started', 'completed', 'failed', 'expired', 'cancelled', "
    "'not approved', 'killed', 'timed out')"
)


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch_op.create_check_constraint("status", NEW_RUN)

    op.create_table(
        "node_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("collaborations", sa.JSON(), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("requested_collaboration_id", sa.Integer(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "state IN ('approved', 'rejected', 'revoked', 'pending')",
            name=op.f("ck_node_images_state"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_images_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_images")),
        sa.UniqueConstraint("node_id", "digest", name=op.f("uq_node_images_node_id")),
    )
    with op.batch_alter_table("node_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_images_digest"), ["digest"], unique=False)

    op.create_table(
        "image_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=True),
        sa.Column("collaborations", sa.JSON(), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "decision IN ('approve', 'reject', 'revoke')",
            name=op.f("ck_image_decisions_decision"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'applied', 'refused')",
            name=op.f("ck_image_decisions_status"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_image_decisions_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_image_decisions_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_decisions")),
    )
    with op.batch_alter_table("image_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_decisions_node_id"), ["node_id"], unique=False)

    op.create_table(
        "image_run_phases",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "phase IN ('pulling', 'starting', 'running')",
            name=op.f("ck_image_run_phases_phase"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_image_run_phases_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_image_run_phases")),
    )


def downgrade() -> None:
    op.drop_table("image_run_phases")
    with op.batch_alter_table("image_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_decisions_node_id"))
    op.drop_table("image_decisions")
    with op.batch_alter_table("node_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_images_digest"))
    op.drop_table("node_images")
    # Runs in the image statuses have no place in the old constraint: they failed.
    op.execute(
        "UPDATE runs SET status = 'failed' WHERE status IN ('not approved', 'killed', 'timed out')"
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch_op.create_check_constraint("status", OLD_RUN)
