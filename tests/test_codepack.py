"""Code packaging: exact names, default and .deepdockignore ignores, secrets reported, deterministic bytes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from deepdock.codepack import CodePackage, package_code
from deepdock.errors import SpecError


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _names(package: CodePackage) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(package.data), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_names_are_kept_exactly_hidden_ones_included(tmp_path: Path) -> None:
    _tree(tmp_path, {"train.py": "", ".config/settings.toml": "", "a/.hidden": "", "..foo": "", ".deepdockignore": ""})
    package = package_code(tmp_path)
    assert _names(package) == ["..foo", ".config/settings.toml", ".deepdockignore", "a/.hidden", "train.py"]
    assert package.skipped_secrets == [] and package.warning() is None


def test_default_ignores_leave_out_local_and_generated_files_silently(tmp_path: Path) -> None:
    _tree(tmp_path, {"train.py": "", ".git/HEAD": "", ".venv/bin/python": "", "pkg/__pycache__/m.cpython-311.pyc": "",
                     "pkg/m.py": "", "old.pyc": "", "node_modules/x/index.js": "", ".pytest_cache/v": ""})
    package = package_code(tmp_path)
    assert _names(package) == ["pkg/m.py", "train.py"]
    assert package.skipped_secrets == []


def test_secrets_are_left_out_by_default_and_named(tmp_path: Path) -> None:
    _tree(tmp_path, {"train.py": "", ".ssh/id_ed25519": "k", ".aws/credentials": "k", ".gnupg/pubring.kbx": "k",
                     ".env": "TOKEN=1", ".env.local": "TOKEN=2", "sub/.env": "TOKEN=3", ".netrc": "", ".pypirc": "",
                     ".docker/config.json": "{}", ".docker/compose.yaml": "", "environment.yml": ""})
    package = package_code(tmp_path)
    assert _names(package) == [".docker/compose.yaml", "environment.yml", "train.py"]
    assert package.skipped_secrets == [".aws/", ".docker/config.json", ".env", ".env.local", ".gnupg/", ".netrc",
                                       ".pypirc", ".ssh/", "sub/.env"]
    warning = package.warning()
    assert warning is not None
    assert warning.startswith("left out of the code package (secrets): .aws/, .docker/config.json, .env, ")
    assert warning.endswith("add `!.docker/config.json` to .deepdockignore to include")


def test_deepdockignore_leaves_out_more_and_re_includes_defaults(tmp_path: Path) -> None:
    _tree(tmp_path, {
        ".deepdockignore": "# comment\ndata/\n*.ckpt\n!best.ckpt\n!.env\n/top.txt\n",
        "train.py": "", "data/big.bin": "", "sub/data/more.bin": "", "epoch1.ckpt": "", "sub/epoch2.ckpt": "",
        "best.ckpt": "", ".env": "A=1", "top.txt": "", "sub/top.txt": "", ".ssh/id_rsa": "k",
    })
    package = package_code(tmp_path)
    assert _names(package) == [".deepdockignore", ".env", "best.ckpt", "sub/top.txt", "train.py"]
    assert package.skipped_secrets == [".ssh/"]  # what the user left out on purpose is not warned about


def test_a_secret_the_user_ignores_too_is_not_warned_about(tmp_path: Path) -> None:
    _tree(tmp_path, {".deepdockignore": ".env\n", ".env": "", "train.py": ""})
    package = package_code(tmp_path)
    assert _names(package) == [".deepdockignore", "train.py"] and package.skipped_secrets == []


def test_a_re_included_secret_folder_is_packaged(tmp_path: Path) -> None:
    _tree(tmp_path, {".deepdockignore": "!.aws/\n", ".aws/config": "[default]\n"})
    assert _names(package_code(tmp_path)) == [".aws/config", ".deepdockignore"]


def test_symbolic_links_are_never_packaged(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "outside", {"credentials": "k"})
    code = _tree(tmp_path / "code", {"train.py": ""})
    os.symlink(outside, code / "linked")
    os.symlink(outside / "credentials", code / "creds")
    assert _names(package_code(code)) == ["train.py"]


def test_the_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    _tree(tmp_path, {"b.py": "b", "a/c.py": "c", ".env": "x"})
    first = package_code(tmp_path)
    os.utime(tmp_path / "b.py", (1, 1))
    second = package_code(tmp_path)
    assert first.data == second.data
    with tarfile.open(fileobj=io.BytesIO(first.data), mode="r:gz") as tar:
        assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "") for m in tar.getmembers())
    assert first.data[4:8] == b"\0\0\0\0"  # the gzip header's mtime


def test_a_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=f"code folder {tmp_path / 'nope'} does not exist"):
        package_code(tmp_path / "nope")
    (tmp_path / "file.py").write_text("")
    with pytest.raises(SpecError, match="is not a folder"):
        package_code(tmp_path / "file.py")
