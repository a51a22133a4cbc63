"""Where job artifacts, checkpoints and model files live: a local folder by default, an S3-compatible bucket
through one setting (``artifact_store``), behind one interface so no caller knows which.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from deepdock.artifacts.base import ArtifactInfo, ArtifactStore, ArtifactStoreError, validate_key, validate_prefix
from deepdock.artifacts.local import LocalArtifactStore
from deepdock.artifacts.s3 import S3ArtifactStore
from deepdock.errors import SpecError

__all__ = [
    "ArtifactInfo",
    "ArtifactStore",
    "ArtifactStoreError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "store_from_url",
    "validate_key",
    "validate_prefix",
]

_URL_FORMS = "'' (the default folder), file:///absolute/path or s3://bucket[/prefix]"


def store_from_url(url: str, *, local_root: Path, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """The store a setting names: ``""`` -> ``local_root``; ``file:///abs/path``; ``s3://bucket[/prefix]``
    (on ``s3_endpoint_url``, or AWS itself when that is unset). Builds a client but makes no request."""
    url = url.strip()
    if not url:
        return LocalArtifactStore(local_root)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise SpecError(f"artifact store URL {url!r} may not have a query or fragment; use {_URL_FORMS}")
    scheme = parts.scheme.lower()
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise SpecError(f"artifact store URL {url!r} is not an absolute file URL: use file:///absolute/path")
        return LocalArtifactStore(Path(path))
    if scheme == "s3":
        if not parts.netloc:
            raise SpecError(f"artifact store URL {url!r} names no bucket: use s3://bucket[/prefix]")
        return S3ArtifactStore(parts.netloc, unquote(parts.path).strip("/"), endpoint_url=s3_endpoint_url or None)
    raise SpecError(f"artifact store URL {url!r} has an unknown scheme {parts.scheme!r}: use {_URL_FORMS}")
