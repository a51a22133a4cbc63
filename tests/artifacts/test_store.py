"""The artifact store contract, run unchanged against both stores (a folder, and a real S3 server), then
what only one of them can show: crash safety of the folder, an S3 endpoint that is down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deepdock.artifacts import (
    ArtifactInfo,
    ArtifactStore,
    ArtifactStoreError,
    LocalArtifactStore,
    S3ArtifactStore,
    store_from_url,
    validate_key,
)
from deepdock.artifacts.s3 import make_client
from deepdock.errors import NotFoundError, SpecError
from tests.artifacts.conftest import new_bucket_name
from tests.artifacts.seaweed import SeaweedServer

BIG = 12 * 1024 * 1024  # over boto3's 8 MiB multipart threshold: two parts

BAD_KEYS = ["", "/abs", "../x", "a/../b", "a/..", "a//b", "a/", "./a", "a/./b", ".", "a\\b", "a\x00b", "x" * 256,
            "/".join(["abcd"] * 300)]


def keys(infos: list[ArtifactInfo]) -> list[str]:
    return [info.key for info in infos]


# --- validate_key on its own


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_key(key)
    assert "artifact key" in caught.value.message


@pytest.mark.parametrize("key", ["a", "jobs/abc/attempt-1/rank-0/model.pt", ".hidden/x", "a..b/c", "ünï/cödé", "a b/c"])
def test_validate_key_keeps_good_keys(key: str) -> None:
    assert validate_key(key) == key


def test_validate_key_messages_say_what_is_wrong() -> None:
    for key, words in [("", "empty"), ("/abs", "absolute"), ("../x", "'..'"), ("a//b", "empty path part"),
                       ("a\\b", "backslash"), ("a\x00b", "NUL"), ("./a", "'.'")]:
        with pytest.raises(SpecError, match=words):
            validate_key(key)


# --- the contract, on both stores


def test_bytes_round_trip_and_overwrite(store: ArtifactStore) -> None:
    store.put_bytes("a/b/c.txt", b"hello")
    assert store.get_bytes("a/b/c.txt") == b"hello"
    store.put_bytes("a/b/c.txt", b"replaced")
    assert store.get_bytes("a/b/c.txt") == b"replaced"
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""
    assert store.stat("empty").size == 0


def test_large_file_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    src = tmp_path / "model.pt"
    src.write_bytes(data)
    store.put_file("jobs/j1/attempt-1/rank-0/model.pt", src)
    info = store.stat("jobs/j1/attempt-1/rank-0/model.pt")
    assert info == ArtifactInfo("jobs/j1/attempt-1/rank-0/model.pt", BIG, info.modified_at)
    dest = tmp_path / "out" / "deeper" / "model.pt"  # folders are created
    store.get_file("jobs/j1/attempt-1/rank-0/model.pt", dest)
    assert dest.read_bytes() == data
    assert store.get_bytes("jobs/j1/attempt-1/rank-0/model.pt") == data
    assert [p.name for p in dest.parent.iterdir()] == ["model.pt"]  # no temp file left beside it


def test_iter_chunks(store: ArtifactStore) -> None:
    data = os.urandom(3000)
    store.put_bytes("blob", data)
    chunks = list(store.iter_chunks("blob", chunk_size=1024))
    assert b"".join(chunks) == data
    assert all(len(c) <= 1024 for c in chunks) and len(chunks) >= 3
    assert b"".join(store.iter_chunks("blob")) == data


def test_list_is_recursive_sorted_and_by_folder(store: ArtifactStore) -> None:
    for key in ["a/b/2", "a/b/1", "a/b/deep/x", "a/bc/1", "a/b.txt", "z"]:
        store.put_bytes(key, key.encode())
    assert keys(store.list("a/b")) == ["a/b/1", "a/b/2", "a/b/deep/x"]  # not a/bc/1, not a/b.txt
    assert keys(store.list("a/b/")) == ["a/b/1", "a/b/2", "a/b/deep/x"]
    assert keys(store.list("a")) == ["a/b.txt", "a/b/1", "a/b/2", "a/b/deep/x", "a/bc/1"]
    assert keys(store.list()) == ["a/b.txt", "a/b/1", "a/b/2", "a/b/deep/x", "a/bc/1", "z"]
    assert store.list("nothing/here") == []
    assert store.list("a/b/1") == []  # a key is not a folder
    info = next(i for i in store.list("a/b") if i.key == "a/b/deep/x")
    assert info.size == len(b"a/b/deep/x")
    assert abs(info.modified_at - time.time()) < 120


def test_stat_and_exists(store: ArtifactStore) -> None:
    store.put_bytes("s/one", b"12345")
    info = store.stat("s/one")
    assert (info.key, info.size) == ("s/one", 5)
    assert isinstance(info.modified_at, float) and abs(info.modified_at - time.time()) < 120
    assert store.exists("s/one")
    assert not store.exists("s/two")
    assert not store.exists("s")  # a folder is not an object


def test_delete_and_delete_prefix(store: ArtifactStore) -> None:
    for key in ["d/x/1", "d/x/2", "d/x/sub/3", "d/xy/1", "d/keep"]:
        store.put_bytes(key, b".")
    store.delete("d/keep")
    store.delete("d/keep")  # missing: no error
    store.delete("never/was")
    assert not store.exists("d/keep")
    assert store.delete_prefix("d/x") == 3
    assert keys(store.list("d")) == ["d/xy/1"]
    assert store.delete_prefix("d/x") == 0
    assert store.delete_prefix("d") == 1
    assert store.list() == []


def test_copy(store: ArtifactStore) -> None:
    store.put_bytes("src/model.pt", b"weights")
    store.copy("src/model.pt", "registry/m/1/model.pt")
    assert store.get_bytes("registry/m/1/model.pt") == b"weights"
    assert store.get_bytes("src/model.pt") == b"weights"
    store.put_bytes("src/model.pt", b"changed")  # a copy, not a link
    assert store.get_bytes("registry/m/1/model.pt") == b"weights"
    store.copy("src/model.pt", "registry/m/1/model.pt")  # over an existing key
    assert store.get_bytes("registry/m/1/model.pt") == b"changed"


def test_missing_keys_raise_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("there/x", b".")
    for call in (lambda: store.get_bytes("there/y"), lambda: store.stat("there/y"),
                 lambda: store.get_file("there/y", tmp_path / "y"), lambda: store.copy("there/y", "there/z"),
                 lambda: store.get_bytes("there")):
        with pytest.raises(NotFoundError, match="there"):
            call()
    # Raised by the call itself, before anything iterates: a server can still answer 404.
    with pytest.raises(NotFoundError):
        store.iter_chunks("there/y")
    assert not (tmp_path / "y").exists()
    assert not store.exists("there/z")


@pytest.mark.parametrize("bad", ["", "/abs", "../x", "a//b", "a\\b", "./a"])
def test_bad_keys_raise_spec_error_everywhere(store: ArtifactStore, bad: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b".")
    store.put_bytes("ok", b".")
    calls: list[Any] = [
        lambda: store.put_bytes(bad, b"x"), lambda: store.put_file(bad, src), lambda: store.get_bytes(bad),
        lambda: store.iter_chunks(bad), lambda: store.get_file(bad, tmp_path / "out"), lambda: store.stat(bad),
        lambda: store.exists(bad), lambda: store.delete(bad), lambda: store.copy("ok", bad), lambda: store.copy(bad, "ok2"),
    ]
    if bad:  # "" is the whole store for the prefix methods
        calls += [lambda: store.list(bad), lambda: store.delete_prefix(bad)]
    for call in calls:
        with pytest.raises(SpecError):
            call()
    assert keys(store.list()) == ["ok"]


def test_concurrent_writers(store: ArtifactStore) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(5):
                store.put_bytes(f"c/shared/w{n}-{i}", f"{n}-{i}".encode() * 100)
                store.put_bytes("c/same", f"{n}".encode() * 1000)  # one key, many writers
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = keys(store.list("c/shared"))
    assert listed == sorted(f"c/shared/w{n}-{i}" for n in range(6) for i in range(5))
    assert store.get_bytes("c/shared/w3-4") == b"3-4" * 100
    same = store.get_bytes("c/same")
    assert len(same) == 1000 and len(set(same)) == 1  # one writer's whole value, never a mix
    assert keys(store.list("c")) == sorted([*listed, "c/same"])


def test_url_is_for_display(local_store: LocalArtifactStore, tmp_path: Path) -> None:
    assert local_store.url == (tmp_path / "store").resolve().as_uri()
    assert S3ArtifactStore("bucket", "p/q", client=object()).url == "s3://bucket/p/q"
    assert S3ArtifactStore("bucket", client=object()).url == "s3://bucket"


# --- store_from_url


def test_store_from_url_local_forms(tmp_path: Path) -> None:
    default = store_from_url("", local_root=tmp_path / "home" / "artifacts")
    assert isinstance(default, LocalArtifactStore) and default.root == (tmp_path / "home" / "artifacts").resolve()
    default.put_bytes("k", b"v")
    assert (tmp_path / "home" / "artifacts" / "k").read_bytes() == b"v"
    explicit = store_from_url(f"file://{tmp_path}/elsewhere", local_root=tmp_path / "unused")
    assert isinstance(explicit, LocalArtifactStore) and explicit.root == (tmp_path / "elsewhere").resolve()
    assert explicit.url == (tmp_path / "elsewhere").resolve().as_uri()


def test_store_from_url_s3_forms(seaweed_env: SeaweedServer, s3_bucket: str, tmp_path: Path) -> None:
    endpoint = seaweed_env.endpoint_url
    whole = store_from_url(f"s3://{s3_bucket}", local_root=tmp_path, s3_endpoint_url=endpoint)
    prefixed = store_from_url(f"s3://{s3_bucket}/url-test/deep/", local_root=tmp_path, s3_endpoint_url=endpoint)
    assert isinstance(whole, S3ArtifactStore) and isinstance(prefixed, S3ArtifactStore)
    assert (whole.bucket, whole.prefix, whole.url) == (s3_bucket, "", f"s3://{s3_bucket}")
    assert (prefixed.prefix, prefixed.url) == ("url-test/deep", f"s3://{s3_bucket}/url-test/deep")
    prefixed.put_bytes("model.pt", b"w")  # credentials from the AWS_* variables
    assert whole.get_bytes("url-test/deep/model.pt") == b"w"
    assert keys(prefixed.list()) == ["model.pt"]
    assert prefixed.delete_prefix("") == 1


@pytest.mark.parametrize("url", ["ftp://host/x", "http://example.com/bucket", "file://relative/path", "file:relative",
                                 "s3://", "s3:///prefix", "s3://Bad_Bucket", "s3://bucket/a//b", "s3://bucket/x?y=1",
                                 "/just/a/path", "bucket/prefix"])
def test_store_from_url_refuses(url: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError):
        store_from_url(url, local_root=tmp_path)


# --- the local store only


CRASH_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    import deepdock.artifacts.local as local

    def half_then_die(src, dst, length=0):
        dst.write(src.read(1000))
        dst.flush()
        os._exit(9)  # as a kill -9 would: no except, no finally, no cleanup

    local.shutil.copyfileobj = half_then_die
    local.LocalArtifactStore(Path(sys.argv[1])).put_file("ckpt/model.pt", Path(sys.argv[2]))
""")


def test_local_crash_mid_write_leaves_previous_version(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    store.put_bytes("ckpt/model.pt", b"version 1")
    new = tmp_path / "v2"
    new.write_bytes(os.urandom(100_000))
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "store"), str(new)],
                            capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()
    assert store.get_bytes("ckpt/model.pt") == b"version 1"
    # The dead writer's temp file is still on disk (nothing could remove it) but is no artifact.
    on_disk = sorted(p.name for p in (tmp_path / "store" / "ckpt").iterdir())
    assert len(on_disk) == 2 and "model.pt" in on_disk
    assert keys(store.list()) == ["ckpt/model.pt"]
    assert store.delete_prefix("ckpt") == 1


def test_local_failed_write_cleans_up(local_store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    local_store.put_bytes("m/model.pt", b"old")
    src = tmp_path / "new"
    src.write_bytes(b"n" * 10_000)

    def half_then_fail(src_f: Any, dst_f: Any, length: int = 0) -> None:
        dst_f.write(src_f.read(5000))
        raise OSError(28, "No space left on device")

    import deepdock.artifacts.local as local_module

    monkeypatch.setattr(local_module.shutil, "copyfileobj", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        local_store.put_file("m/model.pt", src)
    with pytest.raises(OSError, match="No space"):
        local_store.put_file("m/new.pt", src)
    assert local_store.get_bytes("m/model.pt") == b"old"
    assert not local_store.exists("m/new.pt")
    assert [p.name for p in (local_store.root / "m").iterdir()] == ["model.pt"]  # temp files removed


def test_local_temp_names_are_reserved(local_store: LocalArtifactStore) -> None:
    with pytest.raises(SpecError, match="reserved"):
        local_store.put_bytes("a/.deepdock-tmp-x", b".")


def test_local_never_leaves_root(local_store: LocalArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    local_store.root.mkdir(parents=True)
    (local_store.root / "link").symlink_to(outside)
    with pytest.raises(SpecError, match="outside"):
        local_store.get_bytes("link/secret")
    with pytest.raises(SpecError, match="outside"):
        local_store.put_bytes("link/new", b"x")
    assert local_store.list() == []  # symlinks are not followed
    assert not (outside / "new").exists()


def test_local_deletes_leave_no_empty_folders(local_store: LocalArtifactStore) -> None:
    local_store.put_bytes("j/attempt-1/rank-0/a", b".")
    local_store.put_bytes("j/attempt-1/rank-1/b", b".")
    local_store.delete("j/attempt-1/rank-0/a")
    assert not (local_store.root / "j" / "attempt-1" / "rank-0").exists()
    assert local_store.delete_prefix("j") == 1
    assert list(local_store.root.iterdir()) == []


# --- the S3 store only


def test_s3_large_upload_is_multipart(s3_store: S3ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(BIG))
    s3_store.put_file("big", src)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/big")
    assert head["ETag"].strip('"').endswith("-2")  # an ETag "<md5>-<parts>" is a multipart upload's
    s3_store.copy("big", "big-copy")  # above the multipart threshold: UploadPartCopy, still server-side
    assert s3_store.stat("big-copy").size == BIG


def test_s3_prefix_isolates_stores(seaweed: SeaweedServer, s3_client: Any, s3_bucket: str) -> None:
    one = S3ArtifactStore(s3_bucket, "iso/one", endpoint_url=seaweed.endpoint_url, client=s3_client)
    two = S3ArtifactStore(s3_bucket, "iso/one-two", endpoint_url=seaweed.endpoint_url, client=s3_client)
    one.put_bytes("k", b"1")
    two.put_bytes("k", b"2")
    assert keys(one.list()) == ["k"] and one.get_bytes("k") == b"1"
    assert one.delete_prefix("") == 1
    assert two.get_bytes("k") == b"2"
    two.delete("k")


def test_s3_ensure_bucket(seaweed: SeaweedServer, s3_client: Any, tmp_path: Path) -> None:
    store = S3ArtifactStore(new_bucket_name(), endpoint_url=seaweed.endpoint_url, client=s3_client)
    src = tmp_path / "f"
    src.write_bytes(b".")
    for call in (lambda: store.put_bytes("k", b"v"), lambda: store.put_file("k", src), lambda: store.list()):
        with pytest.raises(ArtifactStoreError, match="does not exist.*ensure_bucket"):
            call()  # never created implicitly
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"
    assert store.delete_prefix("") == 1
    s3_client.delete_bucket(Bucket=store.bucket)


def test_s3_wrong_credentials(seaweed: SeaweedServer, s3_bucket: str) -> None:
    client = make_client(seaweed.endpoint_url, access_key="nobody", secret_key="wrong", max_attempts=1)
    store = S3ArtifactStore(s3_bucket, endpoint_url=seaweed.endpoint_url, client=client)
    with pytest.raises(ArtifactStoreError, match="credentials"):
        store.put_bytes("k", b"v")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_s3_endpoint_down_fails_fast_and_clearly(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    client = make_client(endpoint, access_key="k", secret_key="s")  # the store's own timeouts and retries
    store = S3ArtifactStore("bucket", "p", endpoint_url=endpoint, client=client)
    src = tmp_path / "f"
    src.write_bytes(b".")
    for call in (lambda: store.get_bytes("k"), lambda: store.put_bytes("k", b"v"), lambda: store.list(),
                 lambda: store.exists("k"), lambda: store.put_file("k", src), lambda: store.iter_chunks("k")):
        started = time.monotonic()
        with pytest.raises(ArtifactStoreError) as caught:
            call()
        assert time.monotonic() - started < 10
        assert endpoint in caught.value.message and "s3://bucket/p" in caught.value.message
        assert caught.value.status_code == 502 and caught.value.code == "artifact_store"
