"""index for the scheduler's incremental read of finished jobs

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished", "jobs", ["finished_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
