"""host access and retry backoff: the host paths an admin allowed each project to mount, and when a
failed job may be placed again

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_path_grants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("prefix", sa.String(length=4096), nullable=False),
        sa.Column("writable", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("granted_by", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("project_id", "prefix"),
    )
    # A failed job waiting out its backoff before the next attempt; NULL = may be placed now.
    op.add_column("jobs", sa.Column("retry_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_at")
    op.drop_table("host_path_grants")
