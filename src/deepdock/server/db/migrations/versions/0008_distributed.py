"""distributed training: each node's address other nodes reach, a project's grant of host networking,
and each attempt's network and rendezvous port

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("address", sa.String(length=255), nullable=False, server_default=""))
    op.add_column("projects", sa.Column("host_network", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("attempts", sa.Column("network", sa.String(length=16), nullable=False, server_default="none"))
    op.add_column("attempts", sa.Column("master_port", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("master_port")
        batch.drop_column("network")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("host_network")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("address")
