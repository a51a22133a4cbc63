"""The build-time wheel server: serves only registered routes, shares one port, fails clearly."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from deepdock.envs import wheelserver
from deepdock.errors import BuildError
from deepdock.settings import Settings


@pytest.fixture()
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_serves_registered_wheels_only_while_held(tmp_path, free_port):
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    (tmp_path / "secret.txt").write_text("no")
    with wheelserver.serve_wheels({"deps-abc": tmp_path}, port=free_port) as url:
        assert url == f"http://127.0.0.1:{free_port}"
        status, page = _get(f"{url}/deps-abc/")
        assert status == 200 and b'href="a-1.0-py3-none-any.whl"' in page and b"secret" not in page
        assert _get(f"{url}/deps-abc/a-1.0-py3-none-any.whl") == (200, b"wheel bytes")
        assert _get(f"{url}/deps-abc/secret.txt")[0] == 404
        assert _get(f"{url}/deps-abc/../deps-abc/secret.txt")[0] == 404
        assert _get(f"{url}/other/")[0] == 404
        with wheelserver.serve_wheels({"framework-def": tmp_path}, port=free_port) as same:  # a concurrent build
            assert same == url and _get(f"{url}/framework-def/")[0] == 200
        assert _get(f"{url}/framework-def/")[0] == 404 and _get(f"{url}/deps-abc/")[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{free_port}/deps-abc/", timeout=2)


def test_port_taken_by_someone_else_is_a_clear_error(tmp_path, free_port, monkeypatch):
    monkeypatch.setattr(wheelserver, "PORT_WAIT_S", 0.3)
    messages: list[str] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port))
        squatter.listen()
        with pytest.raises(BuildError, match=f"127.0.0.1:{free_port} is in use.*{wheelserver.PORT_ENV}"):
            with wheelserver.serve_wheels({"deps-abc": tmp_path}, messages.append, port=free_port):
                pass
    assert any("waiting" in m for m in messages)


def test_bad_port_argument(tmp_path):
    for bad in (0, 70_000):
        with pytest.raises(BuildError, match="not a port number"):
            with wheelserver.serve_wheels({"deps-abc": tmp_path}, port=bad):
                pass


def test_port_setting(monkeypatch):
    # The port comes from settings (DEEPDOCK_WHEEL_PORT); empty means the default, as before.
    for raw, expected in (("", wheelserver.DEFAULT_PORT), ("47999", 47999)):
        monkeypatch.setenv(wheelserver.PORT_ENV, raw)
        assert Settings().wheel_port == expected
    for bad in ("http", "0", "70000"):
        monkeypatch.setenv(wheelserver.PORT_ENV, bad)
        with pytest.raises(ValidationError, match="wheel_port"):
            Settings()
    monkeypatch.delenv(wheelserver.PORT_ENV)
    assert Settings().wheel_port == wheelserver.DEFAULT_PORT
