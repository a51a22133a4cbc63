"""The HAProxy configuration as text (HAProxy itself validates it in test_haproxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepdock.errors import GatewayError
from deepdock.gateway.config import render
from deepdock.gateway.routes import Backend, Route, revision_of_server


def test_each_route_is_a_backend_with_its_replicas_and_its_token_list(tmp_path: Path) -> None:
    route = Route("digits", "digits", (Backend("r2-abc", "10.0.0.2", 32001, 26, 2),), frozenset({"bb", "aa"}))
    rendered = render([route], workdir=tmp_path, bind_host="127.0.0.1", port=8780, log_port=5140)
    assert "bind 127.0.0.1:8780" in rendered.text and "log 127.0.0.1:5140" in rendered.text
    assert "backend svc_digits" in rendered.text
    assert "server r2-abc 10.0.0.2:32001 weight 26 check inter 1s fall 2 rise 1" in rendered.text
    assert f"-f {tmp_path / 'tokens' / 'digits.lst'}" in rendered.text
    assert rendered.token_files == {"digits.lst": "aa\nbb\n"}


@pytest.mark.parametrize("bad", [Route("a b", "a"), Route("a", "a", (Backend("x;y", "h", 1, 1, 1),))])
def test_names_haproxy_cannot_take_are_refused(tmp_path: Path, bad: Route) -> None:
    with pytest.raises(GatewayError, match="not a valid HAProxy name"):
        render([bad], workdir=tmp_path, bind_host="127.0.0.1", port=1, log_port=2)


def test_backend_checks() -> None:
    with pytest.raises(ValueError, match="weight"):
        Backend("r1-a", "h", 1, 257, 1)
    assert revision_of_server("r12-abc") == 12
    assert revision_of_server("<NOSRV>") is None and revision_of_server("rx-1") is None
