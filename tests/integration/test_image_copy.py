"""Environment images reach a remote node by save → load through the server (no registry needed):
``compute.abilities.copy_image`` between two real engines, then a container runs from the copy."""

from __future__ import annotations

import docker
import pytest

from deepdock.compute.abilities import copy_image
from deepdock.compute.base import ContainerSpec
from deepdock.compute.docker import DockerBackend
from deepdock.compute.testing.conformance import wait_finished

pytestmark = pytest.mark.docker

MIB = 1024**2


def test_a_copied_image_runs_on_the_second_engine(docker_client, second_engine, busybox_image, test_run_id,
                                                  labelled_cleanup):
    tag = f"deepdock-test-copy:{test_run_id}"
    docker_client.images.get(busybox_image).tag("deepdock-test-copy", test_run_id)
    source, target = DockerBackend(), DockerBackend(second_engine)
    try:
        assert copy_image(source, target, tag, node="engine2") is True
        assert copy_image(source, target, tag, node="engine2") is False  # present already: a no-op
        assert target._api.inspect_image(tag)["Id"] == docker_client.images.get(tag).id
        cid = target.run(ContainerSpec(
            name=f"deepdock-copy-{test_run_id}", image=tag, command=["sh", "-c", "echo from the copy"], env={},
            labels=dict(labelled_cleanup), cpus=0.5, memory=64 * MIB, pids_limit=64, shm_size=8 * MIB,
        ))
        assert wait_finished(target, cid).exit_code == 0
        assert b"".join(target.logs(cid)) == b"from the copy\n"
        target.remove(cid)
    finally:
        for api in (docker_client.api, target._api):
            try:
                api.remove_image(tag)
            except docker.errors.NotFound:
                pass
        source.close()
        target.close()
