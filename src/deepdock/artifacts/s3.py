"""An S3-compatible bucket as the artifact store, so several machines (or a machine that may be lost) share
artifacts: AWS S3, SeaweedFS, MinIO, Ceph RGW - anything that speaks the S3 API with path-style addressing.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``,
instance roles), so deepdock never stores a secret of its own. boto3 is imported on first use: a server on
the local store should not pay its import time. Every botocore failure becomes a ``deepdock.errors`` class
here, so callers handle one set of errors whatever the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deepdock.artifacts.base import (
    DEFAULT_CHUNK_SIZE,
    ArtifactInfo,
    ArtifactStore,
    ArtifactStoreError,
    validate_key,
    validate_prefix,
)
from deepdock.errors import NotFoundError, SpecError

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig

DEFAULT_REGION = "us-east-1"
# Short: a store that does not answer should fail a request in seconds, not hang it; connection errors
# are retried (standard mode) twice with jittered backoff, so a blip does not fail a job's collection.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3
# DeleteObjects takes at most this many keys per call.
_DELETE_BATCH = 1000
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_BUCKET_MISSING_CODES = frozenset({"NoSuchBucket"})
_DENIED_CODES = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})
# AWS's rules, loosely: lowercase letters, digits, '.', '-'; 3-63 characters; starts and ends alphanumeric.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def make_client(endpoint_url: str | None = None, *, access_key: str | None = None, secret_key: str | None = None,
                connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                max_attempts: int = MAX_ATTEMPTS) -> Any:
    """A boto3 S3 client as the store needs it: path-style addressing (SeaweedFS and MinIO serve no
    virtual-host buckets), bounded timeouts and retries, the region from the AWS config or us-east-1.
    Credentials from boto3's chain unless given (tests, or a caller with its own secret store)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    config = Config(s3={"addressing_style": "path"}, connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"max_attempts": max_attempts, "mode": "standard"})
    return session.client("s3", endpoint_url=endpoint_url or None, region_name=session.region_name or DEFAULT_REGION,
                          config=config)


def _transfer_config() -> TransferConfig:
    from boto3.s3.transfer import TransferConfig

    # boto3's defaults (8 MiB parts from 8 MiB on, 10 threads); fewer threads so one upload does not
    # take every connection of the client's pool (10) from the requests running beside it.
    return TransferConfig(max_concurrency=4)


class S3ArtifactStore(ArtifactStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client: Any = None) -> None:
        if not _BUCKET_RE.match(bucket or ""):
            raise SpecError(f"S3 bucket name {bucket!r} is not valid (3-63 characters: lowercase letters, digits, '.', '-')")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix.strip("/")) if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client if client is not None else make_client(self.endpoint_url)
        self._transfer = _transfer_config()

    # --- keys

    def _object_key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _list_prefix(self, prefix: str) -> str:
        """The S3 ``Prefix`` of the folder ``prefix``: always ending in '/', so "a/b" does not match "a/bc"."""
        prefix = validate_prefix(prefix)
        folder = "/".join(p for p in (self.prefix, prefix) if p)
        return f"{folder}/" if folder else ""

    def _store_key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1:] if self.prefix else object_key

    # --- errors

    def _where(self) -> str:
        return f"{self.url} (endpoint {self.endpoint_url})" if self.endpoint_url else self.url

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        from boto3.exceptions import Boto3Error

        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, key) from exc
        except BotoCoreError as exc:  # connection refused, timeouts, no credentials, ...
            raise ArtifactStoreError(f"artifact store {self._where()} failed: {exc}") from exc
        except Boto3Error as exc:  # the managed transfers wrap what went wrong in their own classes
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                raise self._client_error(cause, key) from exc
            raise ArtifactStoreError(f"artifact store {self._where()} failed: {exc}") from exc

    def _client_error(self, exc: ClientError, key: str | None) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or str(exc)
        if code in _BUCKET_MISSING_CODES:
            return ArtifactStoreError(f"artifact store {self._where()}: bucket {self.bucket!r} does not exist "
                                      f"(create it, or call ensure_bucket())")
        if code in _NOT_FOUND_CODES and key is not None:
            return NotFoundError(f"no artifact {key!r} in {self.url}")
        if code in _DENIED_CODES:
            return ArtifactStoreError(f"artifact store {self._where()} refused the credentials ({code}: {message}); "
                                      f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        return ArtifactStoreError(f"artifact store {self._where()} failed ({code}: {message})")

    # --- the bucket

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist. Never implicit: a typo in the bucket name should fail
        loudly rather than scatter artifacts into a new bucket."""
        with self._errors():
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in _NOT_FOUND_CODES | _BUCKET_MISSING_CODES:
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            region = self.client.meta.region_name
            if region and region != DEFAULT_REGION:  # us-east-1 refuses its own name as a constraint
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # --- writes

    def put_bytes(self, key: str, data: bytes) -> None:
        object_key = self._object_key(key)
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        object_key = self._object_key(key)
        with self._errors(key):
            # Multipart above 8 MiB, parts in parallel; S3 shows the object only once it is complete.
            self.client.upload_file(str(path), self.bucket, object_key, Config=self._transfer)

    def copy(self, src: str, dst: str) -> None:
        source, target = self._object_key(src), self._object_key(dst)
        with self._errors(src):
            # The managed copy: CopyObject, or UploadPartCopy above 8 MiB (CopyObject stops at 5 GiB);
            # server-side either way.
            self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target, Config=self._transfer)

    # --- reads

    def get_bytes(self, key: str) -> bytes:
        object_key = self._object_key(key)
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        object_key = self._object_key(key)
        # GetObject here, not in the generator: a missing key fails at the call, before any chunk.
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                with self._errors(key):
                    yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def get_file(self, key: str, dest: Path) -> None:
        object_key = self._object_key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(key):
            # s3transfer writes to a temp name beside dest and renames it: dest is never half-written.
            self.client.download_file(self.bucket, object_key, str(dest), Config=self._transfer)

    def stat(self, key: str) -> ArtifactInfo:
        object_key = self._object_key(key)
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        return ArtifactInfo(validate_key(key), int(head["ContentLength"]), head["LastModified"].timestamp())

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFoundError:
            return False
        return True

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        list_prefix = self._list_prefix(prefix)
        with self._errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=list_prefix):
                for obj in page.get("Contents", []):
                    # Folder markers ("a/b/") that other tools create are not objects of ours.
                    if not obj["Key"].endswith("/"):
                        yield obj

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        infos = [ArtifactInfo(self._store_key(obj["Key"]), int(obj["Size"]), obj["LastModified"].timestamp())
                 for obj in self._objects(prefix)]
        # S3 sorts by UTF-8 bytes; sorted() here so both stores order non-ASCII keys the same way.
        return sorted(infos, key=lambda info: info.key)

    # --- deletes

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)  # no error for a missing key

    def delete_prefix(self, prefix: str) -> int:
        keys = [obj["Key"] for obj in self._objects(prefix)]
        with self._errors():
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start:start + _DELETE_BATCH]
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                if errors := answer.get("Errors"):
                    first = errors[0]
                    raise ArtifactStoreError(f"artifact store {self._where()}: could not delete {len(errors)} of "
                                             f"{len(batch)} objects under {prefix!r} (first: {first.get('Key')!r}, "
                                             f"{first.get('Code')}: {first.get('Message')})")
        return len(keys)
