"""The artifact store on a real S3-compatible server (SeaweedFS) behind a real deepdock server and Docker:
a job's files and checkpoints land in the bucket, its retry resumes from the checkpoint read back from
S3, a model version's files are copied there, and the API serves them back."""

from __future__ import annotations

import uuid

import pytest
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, wait_status
from tests.integration.test_tracking_real import code_dir, spec

from deepdock.artifacts import S3ArtifactStore
from deepdock.artifacts.s3 import make_client

pytestmark = pytest.mark.docker

# Fails its first attempt after saving a checkpoint; the retry finds it (read back from S3) and succeeds.
JOB = """
import os
from deepdock import sdk
state = sdk.load_checkpoint()
os.makedirs(os.environ["DEEPDOCK_ARTIFACTS_DIR"], exist_ok=True)
if state is None:
    sdk.save_checkpoint({"epoch": 3}, step=3)
    raise SystemExit(1)
with open(os.path.join(os.environ["DEEPDOCK_ARTIFACTS_DIR"], "model.bin"), "wb") as f:
    f.write(b"weights from epoch %d" % state["epoch"])
print("resumed at epoch", state["epoch"], flush=True)
"""


@pytest.fixture
def bucket(seaweed) -> S3ArtifactStore:
    client = make_client(seaweed.endpoint_url, access_key=seaweed.access_key, secret_key=seaweed.secret_key)
    store = S3ArtifactStore(f"deepdock-it-{uuid.uuid4().hex[:8]}", "deepdock", endpoint_url=seaweed.endpoint_url,
                            client=client)
    store.ensure_bucket()
    return store


@pytest.fixture
def server(tmp_path, labelled_cleanup, seaweed, bucket):
    srv = ServerProcess(tmp_path / "home", labelled_cleanup, DEEPDOCK_ARTIFACT_STORE=f"s3://{bucket.bucket}/deepdock",
                        DEEPDOCK_S3_ENDPOINT_URL=seaweed.endpoint_url, AWS_ACCESS_KEY_ID=seaweed.access_key,
                        AWS_SECRET_ACCESS_KEY=seaweed.secret_key, DEEPDOCK_RETRY_BACKOFF_S="0").start()
    yield srv
    srv.stop()


def test_artifacts_checkpoints_and_model_files_live_in_the_bucket(server, bucket, tmp_path, python_image):
    with server.client() as client:
        job = client.run(spec(python_image, code_dir(tmp_path, "s3job", JOB), {}, retry={"max_retries": 1, "on": ["failed"]}))
        done = wait_status(client, job.id, TERMINAL, timeout_s=120)
        assert done.status == "SUCCEEDED", done.status_reason
        assert done.attempts == 2
        assert b"resumed at epoch 3" in b"".join(client.logs(job.id))
        keys = {info.key for info in bucket.list(job.id)}
        assert f"{job.id}/checkpoints/ckpt-000000000003.pkl" in keys
        assert f"{job.id}/attempt-2/rank-0/model.bin" in keys
        assert b"".join(client.artifact(job.id, "model.bin")) == b"weights from epoch 3"
        version = client.register_model("s3-model", job.id, "model.bin")
        assert [f.path for f in version.files] == ["model.bin"]
        models = [info.key for info in bucket.list("models")]
        assert len(models) == 1 and models[0].endswith("/model.bin")
        assert bucket.get_bytes(models[0]) == b"weights from epoch 3"
