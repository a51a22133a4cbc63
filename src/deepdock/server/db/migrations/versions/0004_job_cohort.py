"""jobs.cohort: the batch a job was submitted with, which the default policy learns from

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("cohort", sa.String(160), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "cohort")
