"""gpu_samples: each GPU's utilization, memory, temperature and power, sampled by the usage step

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("utilization_percent", sa.Float(), nullable=True),
        sa.Column("memory_used", sa.BigInteger(), nullable=True),
        sa.Column("memory_total", sa.BigInteger(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
    )
    op.create_index("ix_gpu_samples_node_at", "gpu_samples", ["node_name", "at"])
    op.create_index("ix_gpu_samples_at", "gpu_samples", ["at"])


def downgrade() -> None:
    op.drop_index("ix_gpu_samples_at", table_name="gpu_samples")
    op.drop_index("ix_gpu_samples_node_at", table_name="gpu_samples")
    op.drop_table("gpu_samples")
