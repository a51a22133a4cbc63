"""service_samples: a service's traffic as the gateway measured it, every few seconds, per revision

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("inference_services.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("rps", sa.Float(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=False),
        sa.Column("p99_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_service_samples_service_at", "service_samples", ["service_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_service_samples_service_at", table_name="service_samples")
    op.drop_table("service_samples")
