"""fenced state: version columns on attempts and replicas, the replica's record and stop times, and the
admin's drain kept apart from node health

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("replicas", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    # When the container id was written: only a listing begun later may call the container lost.
    op.add_column("replicas", sa.Column("recorded_at", sa.Float(), nullable=True))
    # When the server signalled the container to stop: an exit before it is the job's own.
    op.add_column("replicas", sa.Column("stop_sent_at", sa.Float(), nullable=True))
    op.add_column("nodes", sa.Column("draining", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE nodes SET draining = true, status = 'ready' WHERE status = 'draining'")


def downgrade() -> None:
    op.execute("UPDATE nodes SET status = 'draining' WHERE draining")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("draining")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("stop_sent_at")
        batch.drop_column("recorded_at")
        batch.drop_column("version")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("version")
