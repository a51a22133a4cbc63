"""indexes for filtered job listings

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_project_status_created", "jobs", ["project_id", "status", "created_at"])
    op.create_index("ix_jobs_name_created", "jobs", ["name", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_name_created", table_name="jobs")
    op.drop_index("ix_jobs_project_status_created", table_name="jobs")
    op.drop_index("ix_jobs_status_created", table_name="jobs")
