"""A hostile tenant against a real server on a real engine, as a non-admin user: every way to the host
that a spec offers is refused at submit with a clear error, named volumes stay inside the project, and
a root image runs unprivileged, so no mount a tenant can get writes what root owns on the host."""

from __future__ import annotations

import time

import pytest
from tests.integration.server_process import ServerProcess

from deepdock.client import Client
from deepdock.errors import PermissionDeniedError, SpecError
from deepdock.specs.job import JobSpec

pytestmark = pytest.mark.docker
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def spec(image: str, command: str, volumes: list[dict[str, object]], project: str = "vision") -> JobSpec:
    return JobSpec.model_validate({"name": "probe", "image": image, "command": ["sh", "-c", command],
                                   "project": project, "volumes": volumes,
                                   "resources": {"cpus": 0.5, "memory": "64m", "pids": 64}})


def finished(client: Client, job_id: str, timeout_s: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        d = client.job(job_id)
        if d.status in TERMINAL:
            return d
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {d.status} {d.status_reason}")


@pytest.fixture
def tenants(tmp_path, labelled_cleanup):
    srv = ServerProcess(tmp_path / "home", labelled_cleanup).start()
    try:
        with srv.client() as admin:
            mallory = admin.create_user("mallory", projects=["vision"])
            eve = admin.create_user("eve", projects=["nlp"])
            yield srv, admin, Client(srv.url, mallory.token), Client(srv.url, eve.token)
    finally:
        srv.stop()


@pytest.mark.parametrize("source", ["/", "/etc", "/var/run/docker.sock", "/run/docker.sock", "/var/lib/docker"])
def test_host_paths_and_the_engine_socket_are_refused_at_submit(tenants, busybox_image, source):
    _, _, mallory, _ = tenants
    with pytest.raises(PermissionDeniedError) as info:
        mallory.submit(spec(busybox_image, "true", [{"source": source, "target": "/host", "read_only": False}]))
    assert source in info.value.message
    assert mallory.jobs() == []  # nothing was stored


def test_the_servers_home_cannot_be_mounted_even_with_a_broad_grant(tenants, busybox_image, tmp_path):
    srv, admin, mallory, _ = tenants
    with pytest.raises(PermissionDeniedError, match="cannot be granted"):
        admin.allow_host_path("vision", str(tmp_path))  # the server's home lies below it
    with pytest.raises(PermissionDeniedError, match="never mounted"):
        mallory.submit(spec(busybox_image, "true", [{"source": str(srv.home.resolve() / "config.json"),
                                                    "target": "/c"}]))


def test_a_tenant_cannot_grant_itself_a_path(tenants):
    _, _, mallory, _ = tenants
    with pytest.raises(PermissionDeniedError):
        mallory.allow_host_path("vision", "/srv/data", writable=True)


def test_a_root_image_cannot_write_root_owned_files_through_its_granted_mount(tenants, busybox_image, tmp_path):
    _, admin, mallory, _ = tenants
    shared = tmp_path / "datasets"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "labels.csv").write_text("a,b\n")
    admin.allow_host_path("vision", str(shared), writable=True)
    probe = ("id -u; cat /data/labels.csv; (echo x >> /data/labels.csv) 2>/dev/null && echo WROTE; "
             "(touch /data/planted) 2>/dev/null && echo PLANTED; true")
    j = mallory.submit(spec(busybox_image, probe, [{"source": str(shared), "target": "/data", "read_only": False}]))
    d = finished(mallory, j.id)
    out = b"".join(mallory.logs(j.id)).decode().split()
    assert d.status == "SUCCEEDED", d.status_reason
    assert out == ["65534", "a,b"]
    assert (shared / "labels.csv").read_text() == "a,b\n" and not (shared / "planted").exists()


def test_named_volumes_stay_inside_their_project(tenants, busybox_image, docker_client):
    _, _, mallory, eve = tenants
    writer = mallory.submit(spec(busybox_image, "echo secret > /v/f", [{"source": "cache", "target": "/v",
                                                                       "read_only": False}]))
    assert finished(mallory, writer.id).status == "SUCCEEDED"
    # Eve names the same volume in her project, and the engine name of Mallory's: both are hers, empty.
    mine = mallory.volumes().volumes
    assert [(v.project, v.name) for v in mine] == [("vision", "cache")]
    for source in ("cache", mine[0].engine_name):
        reader = eve.submit(spec(busybox_image, "cat /v/f 2>/dev/null || echo empty",
                                 [{"source": source, "target": "/v"}], project="nlp"))
        assert finished(eve, reader.id).status == "SUCCEEDED"
        assert b"".join(eve.logs(reader.id)).decode().split() == ["empty"]
    assert {(v.project, v.name) for v in eve.volumes().volumes} == {("nlp", "cache"), ("nlp", mine[0].engine_name)}
    assert mallory.volumes().volumes == mine  # she sees only her own
    with pytest.raises(Exception, match="no project|not"):
        eve.remove_volume("vision", "cache")
    mallory.remove_volume("vision", "cache")
    assert mallory.volumes().volumes == []
    labels = {v.name: v.attrs["Labels"] for v in docker_client.volumes.list(filters={"label": "deepdock.volume"})}
    assert mine[0].engine_name not in labels


def test_an_environment_path_or_a_nul_byte_is_refused_at_submit(tenants, busybox_image):
    _, _, mallory, _ = tenants
    raw = {"spec": {"name": "x", "environment": "/etc/passwd", "command": ["true"], "project": "vision"}}
    response = mallory._http.post("/api/v1/jobs", json=raw)
    assert response.status_code == 422 and "does not read files" in response.text
    with pytest.raises(SpecError):
        mallory.submit(JobSpec.model_construct(**{**spec(busybox_image, "true", []).__dict__, "env": {"A": "x\x00"}}))
    assert mallory.jobs() == []
