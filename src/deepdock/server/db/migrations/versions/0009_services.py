"""services: a model version served by replicas (each a job, spread over nodes by its group), revisions,
and the rollout's events

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("spread_group", sa.String(length=64), nullable=True))
    op.create_table(
        "inference_services",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("scaled_at", sa.Float(), nullable=True),
        sa.Column("stable_revision", sa.Integer(), nullable=True),
        sa.Column("target_revision", sa.Integer(), nullable=True),
        sa.Column("canary_step", sa.Integer(), nullable=True),
        sa.Column("step_started_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("lock", sa.Integer(), nullable=False),
    )
    op.create_table(
        "inference_revisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("inference_services.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("image", sa.String(length=256), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("lock", sa.Integer(), nullable=False),
        sa.UniqueConstraint("service_id", "number"),
    )
    op.create_table(
        "inference_replicas",
        sa.Column("job_id", sa.String(length=32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("inference_services.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("container_id", sa.String(length=80), nullable=True),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("ready_since", sa.Float(), nullable=True),
        sa.Column("unready_since", sa.Float(), nullable=True),
        sa.Column("retiring_since", sa.Float(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "inference_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("inference_services.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_inference_events_service", "inference_events", ["service_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_inference_events_service", table_name="inference_events")
    op.drop_table("inference_events")
    op.drop_table("inference_replicas")
    op.drop_table("inference_revisions")
    op.drop_table("inference_services")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spread_group")
