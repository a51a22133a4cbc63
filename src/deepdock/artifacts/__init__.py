"""Where artifacts, checkpoints and model files live: a local folder, or an S3-compatible bucket."""

from __future__ import annotations

from pathlib import Path

from deepdock.artifacts.base import ArtifactInfo, ArtifactStore, ArtifactStoreError, validate_key
from deepdock.artifacts.local import LocalArtifactStore
from deepdock.errors import SpecError

__all__ = ["ArtifactInfo", "ArtifactStore", "ArtifactStoreError", "LocalArtifactStore", "store_from_url", "validate_key"]


def store_from_url(url: str, *, local_root: Path, s3_endpoint_url: str | None = None) -> ArtifactStore:
    if not url:
        return LocalArtifactStore(local_root)
    if url.startswith("file://"):
        return LocalArtifactStore(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        from deepdock.artifacts.s3 import S3ArtifactStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3ArtifactStore(bucket, prefix, endpoint_url=s3_endpoint_url)
    raise SpecError(f"artifact store {url!r}: use file:///path or s3://bucket[/prefix]")
