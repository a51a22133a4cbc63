"""services/host_access.py and services/volumes.py: a bind mount needs an admin's grant for the job's
project and never reaches the engine's socket or the server's home; named volumes are the project's
own, created labelled before the containers mount them, listed and removed per project."""

from __future__ import annotations

import pytest

from deepdock.api.enums import JobStatus
from deepdock.compute.base import LABEL_JOB
from deepdock.errors import ConflictError, NotFoundError, PermissionDeniedError, SpecError
from deepdock.server.services import host_access
from deepdock.server.services import jobs as job_service
from deepdock.server.services import volumes as volume_service
from tests.server.factories import job_spec_of, make_project, make_user


def _users(session):
    admin = make_user(session)
    alice = make_user(session, "alice", is_admin=False)
    bob = make_user(session, "bob", is_admin=False)
    make_project(session, "vision", members=[alice])
    make_project(session, "nlp", members=[bob])
    return admin, alice, bob


def _protected(steps):
    return host_access.protected_paths(steps.ctx.settings.home, [])


def _submit(steps, session, user, **spec):
    return job_service.submit_job(session, user, job_spec_of(project="vision", **spec),
                                  server_home=steps.ctx.settings.home)


@pytest.mark.parametrize("source", ["/", "/var", "/var/run/docker.sock", "/run", "/etc", "/data/other"])
def test_a_bind_mount_without_a_grant_is_refused(steps, source):
    steps.node("a")
    with steps.session() as session:
        _, alice, _ = _users(session)
        host_access.allow_host_path(session, make_user(session), "vision", "/data/sets", writable=False,
                                    protected=_protected(steps))
        with pytest.raises(PermissionDeniedError, match="may not mount|never mounted"):
            _submit(steps, session, alice, volumes=[{"source": source, "target": "/host"}])


def test_a_grant_allows_what_lies_below_it_read_only_unless_writable(steps):
    steps.node("a")
    with steps.session() as session:
        admin, alice, _ = _users(session)
        host_access.allow_host_path(session, admin, "vision", "/data/sets", writable=False, protected=_protected(steps))
        job = _submit(steps, session, alice, volumes=[{"source": "/data/sets/digits", "target": "/d"}])
        assert job.status == JobStatus.QUEUED
        with pytest.raises(PermissionDeniedError, match="read-only"):
            _submit(steps, session, alice, volumes=[{"source": "/data/sets", "target": "/d", "read_only": False}])
        with pytest.raises(PermissionDeniedError, match="may not mount"):  # a prefix by path part, not by string
            _submit(steps, session, alice, volumes=[{"source": "/data/setsX", "target": "/d"}])
        host_access.allow_host_path(session, admin, "vision", "/data/sets", writable=True, protected=_protected(steps))
        assert _submit(steps, session, alice, volumes=[{"source": "/data/sets", "target": "/d", "read_only": False}])


def test_another_projects_grant_does_not_count(steps):
    steps.node("a")
    with steps.session() as session:
        admin, _, bob = _users(session)
        host_access.allow_host_path(session, admin, "vision", "/data/sets", writable=True, protected=_protected(steps))
        with pytest.raises(PermissionDeniedError, match="'nlp' may not mount"):
            job_service.submit_job(session, bob, job_spec_of(project="nlp", volumes=[{"source": "/data/sets",
                                                                                      "target": "/d"}]),
                                   server_home=steps.ctx.settings.home)


@pytest.mark.parametrize("prefix", ["/", "/var", "/run", "/var/run/docker.sock", "/var/lib/docker/volumes"])
def test_the_engine_socket_can_never_be_granted(steps, prefix):
    with steps.session() as session:
        admin, _, _ = _users(session)
        with pytest.raises(PermissionDeniedError, match="cannot be granted"):
            host_access.allow_host_path(session, admin, "vision", prefix, writable=False, protected=_protected(steps))


def test_the_servers_home_can_never_be_granted_or_mounted(steps):
    steps.node("a")
    home = str(steps.ctx.settings.home.resolve())
    with steps.session() as session:
        admin, _, _ = _users(session)
        for prefix in (home, home + "/artifacts", str(steps.ctx.settings.home.resolve().parent)):
            with pytest.raises(PermissionDeniedError, match="cannot be granted"):
                host_access.allow_host_path(session, admin, "vision", prefix, writable=False,
                                            protected=_protected(steps))
        with pytest.raises(PermissionDeniedError, match="never mounted"):
            _submit(steps, session, admin, volumes=[{"source": home + "/logs", "target": "/l"}])


def test_only_admins_grant_and_revoke_and_members_see_their_projects_grants(steps):
    with steps.session() as session:
        admin, alice, bob = _users(session)
        with pytest.raises(PermissionDeniedError):
            host_access.allow_host_path(session, alice, "vision", "/data", writable=True, protected=_protected(steps))
        host_access.allow_host_path(session, admin, "vision", "/data", writable=False, protected=_protected(steps))
        assert [g.prefix for g in host_access.list_host_paths(session, alice, "vision")] == ["/data"]
        with pytest.raises(NotFoundError):
            host_access.list_host_paths(session, bob, "vision")
        with pytest.raises(PermissionDeniedError):
            host_access.revoke_host_path(session, alice, "vision", "/data")
        host_access.revoke_host_path(session, admin, "vision", "/data")
        assert host_access.list_host_paths(session, alice, "vision") == []
        with pytest.raises(SpecError):
            host_access.allow_host_path(session, admin, "vision", "/data/../etc", writable=False,
                                        protected=_protected(steps))


def test_named_volumes_are_the_projects_own_labelled_listed_and_removed(steps):
    engine = steps.node("a")
    with steps.session() as session:
        admin, alice, bob = _users(session)
        job = _submit(steps, session, alice, volumes=[{"source": "cache", "target": "/cache", "read_only": False}])
        project_id = session.get(job_service.Job, job.id).project_id
    steps.schedule()
    (container,) = engine.list_containers({LABEL_JOB: job.id})
    spec = engine.spec_of(container.id)
    engine_name = volume_service.engine_volume_name(project_id, "cache")
    [info] = engine.list_volumes({volume_service.LABEL_VOLUME: "cache"})
    assert info.name == engine_name and info.labels[volume_service.LABEL_PROJECT] == "vision"
    assert [v.source for v in spec.volumes] == [engine_name]
    with steps.session() as session:
        admin, alice, bob = _users(session)
        listed = volume_service.list_volumes(session, alice, steps.ctx.backend)
        assert [(v.project, v.name, v.node) for v in listed.volumes] == [("vision", "cache", "a")]
        assert volume_service.list_volumes(session, bob, steps.ctx.backend).volumes == []
        with pytest.raises(NotFoundError):
            volume_service.remove_volume(session, bob, steps.ctx.backend, "vision", "cache")
        with pytest.raises(ConflictError):  # the job's container still holds it
            volume_service.remove_volume(session, alice, steps.ctx.backend, "vision", "cache")
    engine.remove(container.id)
    with steps.session() as session:
        _, alice, _ = _users(session)
        assert volume_service.remove_volume(session, alice, steps.ctx.backend, "vision", "cache") == ["a"]
        assert volume_service.list_volumes(session, alice, steps.ctx.backend).volumes == []
