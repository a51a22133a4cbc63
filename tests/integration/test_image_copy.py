"""Environment images reach a remote node by save → load through the server (no registry needed)."""

from __future__ import annotations

import docker
import pytest

from deepdock.server.services.engine_access import copy_image, is_local_engine

pytestmark = pytest.mark.docker


def test_copy_image_between_two_engines(docker_client, second_engine, busybox_image, test_run_id):
    tag = f"deepdock-test-copy:{test_run_id}"
    docker_client.images.get(busybox_image).tag("deepdock-test-copy", test_run_id)
    target = docker.DockerClient(base_url=second_engine, timeout=120)
    try:
        copy_image(docker_client, target, tag)
        assert target.images.get(tag).id == docker_client.images.get(tag).id
        copy_image(docker_client, target, tag)  # present already: a no-op
    finally:
        for client in (docker_client, target):
            try:
                client.images.remove(tag)
            except docker.errors.ImageNotFound:
                pass
        target.close()


@pytest.mark.parametrize(("url", "local"), [
    ("", True), ("unix:///var/run/docker.sock", True), ("tcp://127.0.0.1:2375", True),
    ("tcp://localhost:2376", True), ("tcp://gpu-01.lan:2376", False), ("tcp://10.0.0.7:2376", False),
])
def test_which_engines_are_local(url, local):
    assert is_local_engine(url) is local
