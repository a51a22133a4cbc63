"""replica_usage: the last CPU and memory sample of each running container (the usage step)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_usage",
        sa.Column("replica_id", sa.Integer(), sa.ForeignKey("replicas.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("job_id", sa.String(length=32), nullable=False, index=True),
        sa.Column("node_name", sa.String(length=64), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("memory_usage", sa.BigInteger(), nullable=False),
        sa.Column("memory_limit", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replica_usage")
