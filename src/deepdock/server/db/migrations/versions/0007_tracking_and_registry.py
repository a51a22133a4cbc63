"""tracking and the model registry: metric series, params, checkpoints, models, versions, aliases with
their history; what each attempt ran (image digest, env lock) and which job a rerun repeats

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _job_fk() -> sa.ForeignKey:
    return sa.ForeignKey("jobs.id", ondelete="CASCADE")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("rerun_of", sa.String(length=32), nullable=True))
    op.add_column("attempts", sa.Column("image", sa.String(length=256), nullable=True))
    op.add_column("attempts", sa.Column("image_digest", sa.String(length=80), nullable=True))
    op.add_column("attempts", sa.Column("env_lock", sa.String(length=64), nullable=True))
    op.create_table(
        "metric_chunks",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "metric_latest",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "job_params",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
    )
    op.create_table(
        "data_reads",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("target", sa.String(length=4096), primary_key=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("hashed_bytes", sa.BigInteger(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "tracking_cursors",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(length=32), _job_fk(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("stored_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("job_id", "attempt", "rank", "name"),
    )
    op.create_index("ix_checkpoints_job", "checkpoints", ["job_id", "status"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("prefix", sa.String(length=512), nullable=False),
        sa.Column("model_file", sa.String(length=256), nullable=False),
        sa.Column("formats", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("version_lock", sa.Integer(), nullable=False),
        sa.UniqueConstraint("model_id", "version"),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("alias", sa.String(length=64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("lock", sa.Integer(), nullable=False),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_alias_events_model_alias", "alias_events", ["model_id", "alias", "id"])
    op.create_table(
        "model_exports",
        sa.Column("job_id", sa.String(length=32), _job_fk(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in ("model_exports", "alias_events", "model_aliases", "model_versions", "models", "checkpoints",
                  "tracking_cursors", "data_reads",
                  "job_params", "metric_latest", "metric_chunks"):
        op.drop_table(table)
    with op.batch_alter_table("attempts") as batch:
        for column in ("env_lock", "image_digest", "image"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("rerun_of")
