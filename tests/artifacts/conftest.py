"""Stores for the contract tests: a local folder, and a prefix of a bucket on a real SeaweedFS S3 server.

One server for the session (it takes ~5 s to become writable); every test gets its own prefix (or bucket),
so tests never see each other's objects. Without a ``weed`` binary the S3 tests skip, or fail under CI.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from deepdock.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from deepdock.artifacts.s3 import make_client
from tests.artifacts.seaweed import SeaweedServer


def s3_client_for(server: SeaweedServer) -> Any:
    return make_client(server.endpoint_url, access_key=server.access_key, secret_key=server.secret_key)


@pytest.fixture(scope="session")
def s3_client(seaweed: SeaweedServer) -> Any:
    return s3_client_for(seaweed)


@pytest.fixture(scope="session")
def s3_bucket(seaweed: SeaweedServer, s3_client: Any) -> str:
    """One bucket for the session: on SeaweedFS each bucket costs a volume, a prefix costs nothing."""
    bucket = f"deepdock-test-{uuid.uuid4().hex[:8]}"
    S3ArtifactStore(bucket, endpoint_url=seaweed.endpoint_url, client=s3_client).ensure_bucket()
    return bucket


def new_bucket_name() -> str:
    return f"deepdock-t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_store(seaweed: SeaweedServer, s3_client: Any, s3_bucket: str) -> S3ArtifactStore:
    return S3ArtifactStore(s3_bucket, f"t-{uuid.uuid4().hex[:12]}", endpoint_url=seaweed.endpoint_url, client=s3_client)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ArtifactStore:
    # getfixturevalue, so the local half never starts (or needs) the S3 server.
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def seaweed_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    """The server's credentials in the standard AWS variables, as a deployment would set them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return seaweed
