"""usage_samples: every CPU and memory sample of a job's containers, kept a day (the dashboard's charts)

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("memory_usage", sa.BigInteger(), nullable=False),
        sa.Column("memory_limit", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_samples_job_at", "usage_samples", ["job_id", "at"])
    op.create_index("ix_usage_samples_at", "usage_samples", ["at"])


def downgrade() -> None:
    op.drop_index("ix_usage_samples_at", table_name="usage_samples")
    op.drop_index("ix_usage_samples_job_at", table_name="usage_samples")
    op.drop_table("usage_samples")
