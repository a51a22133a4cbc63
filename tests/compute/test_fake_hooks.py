"""What the fake offers beyond the contract: test hooks the server's logic tests rely on."""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
import time

import pytest

from deepdock.compute.base import ContainerSpec, ContainerStats, GpuInfo
from deepdock.compute.testing.conformance import tar_contents, tar_of
from deepdock.compute.testing.fake import FAKE_ENV_REPO, FakeBackend, FakeClock, fake_env_tag
from deepdock.errors import (
    EngineError,
    EngineUnreachableError,
    ImageMissingError,
    NotFoundError,
    SpecError,
    UnsupportedError,
)
from deepdock.specs.env import EnvSpec

IMAGE = "img:1"
MIB = 1024**2


def _spec(name: str = "job-1", **kw) -> ContainerSpec:
    base = dict(
        name=name,
        image=IMAGE,
        command=["python", "train.py"],
        env={},
        labels={"deepdock.job": "j"},
        cpus=1.0,
        memory=512 * MIB,
        pids_limit=100,
        shm_size=64 * MIB,
    )
    base.update(kw)
    return ContainerSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(images=[IMAGE], clock=FakeClock(start=1000.0))


def test_finish_with_oom_and_clock(fake):
    cid = fake.run(_spec())
    fake.clock.advance(42)  # type: ignore[attr-defined]
    fake.finish(cid, 137, oom=True)
    state = fake.inspect(cid)
    assert (state.status, state.exit_code, state.oom_killed) == ("exited", 137, True)
    assert (state.started_at, state.finished_at) == (1000.0, 1042.0)


def test_unreachable_then_back(fake):
    cid = fake.run(_spec())
    fake.set_unreachable(True)
    with pytest.raises(EngineUnreachableError, match="fake://engine"):
        fake.inspect(cid)
    fake.set_unreachable(False)
    assert fake.inspect(cid).running  # containers survive an outage, like on a real node


def test_fail_next_fires_once(fake):
    fake.fail_next("run", EngineError("boom"))
    with pytest.raises(EngineError, match="boom"):
        fake.run(_spec())
    assert len(fake.run(_spec())) == 64  # a docker-like full id
    assert len(fake.list_containers({})) == 1


def test_code_archive_files_and_spec_recorded(fake):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pass\n"))
    cid = fake.run(_spec(code_archive=gzip.compress(buf.getvalue()), gpu_indices=[], workdir="/code"))
    assert fake.files(cid) == {"/code/train.py": b"pass\n"}
    assert fake.spec_of(cid).workdir == "/code"
    with pytest.raises(SpecError):
        fake.run(_spec(name="job-2", code_archive=b"not a tar" * 50))


def test_validation_mirrors_docker(fake):
    with pytest.raises(EngineError, match="6MB"):
        fake.run(_spec(memory=MIB))
    with pytest.raises(EngineError, match="CPUs"):
        fake.run(_spec(cpus=64))
    with pytest.raises(EngineError, match="GPU"):
        fake.run(_spec(gpu_indices=[0]))
    with pytest.raises(EngineError, match="name"):
        fake.run(_spec(name="x"))
    fake.set_gpus([GpuInfo(0, "GPU-0", "NVIDIA H100 80GB HBM3", 80 * 1024**3)])
    cid = fake.run(_spec(gpu_indices=[0], gpu_share=0.5))
    assert fake.capacity().gpus[0].uuid == "GPU-0"
    assert fake.spec_of(cid).gpu_share == 0.5


def test_stats_default_and_set(fake):
    cid = fake.run(_spec())
    assert fake.stats(cid).memory_limit == 512 * MIB
    sample = ContainerStats(cpu_percent=150.0, memory_usage=100 * MIB, memory_limit=512 * MIB, pids=7)
    fake.set_stats(cid, sample)
    assert fake.stats(cid) == sample


def test_finishing_twice_is_a_test_bug(fake):
    cid = fake.run(_spec())
    fake.finish(cid, 0)
    with pytest.raises(Exception, match="not running"):
        fake.finish(cid, 1)


# The frozen timeout of these tests (real seconds) and the slack allowed around it on a busy machine.
FROZEN_S = 0.2
SLACK_S = 1.5


def test_frozen_engine_blocks_then_times_out_as_unreachable():
    fake = FakeBackend(images=[IMAGE], frozen_timeout_s=FROZEN_S)
    cid = fake.run(_spec())
    fake.set_frozen(True)
    t0 = time.monotonic()
    with pytest.raises(EngineUnreachableError, match="timed out") as info:
        fake.inspect(cid)
    elapsed = time.monotonic() - t0
    assert FROZEN_S <= elapsed < FROZEN_S + SLACK_S
    assert "fake://engine" in info.value.message
    # Test hooks never block: a test drives the "job" while the engine is frozen.
    fake.write_log(cid, "still running\n")
    fake.set_frozen(False)
    assert fake.inspect(cid).running


def test_a_call_waiting_on_a_frozen_engine_goes_on_when_it_is_unfrozen():
    fake = FakeBackend(images=[IMAGE], frozen_timeout_s=10.0)
    fake.set_frozen(True)
    result: list[object] = []
    caller = threading.Thread(target=lambda: result.append(fake.capacity()))
    caller.start()
    time.sleep(0.05)
    assert caller.is_alive() and not result
    fake.set_frozen(False)
    caller.join(SLACK_S)
    assert not caller.is_alive() and result


def test_frozen_calls_wait_side_by_side_not_one_after_another():
    fake = FakeBackend(frozen_timeout_s=FROZEN_S)
    fake.set_frozen(True)
    errors: list[Exception] = []

    def call() -> None:
        try:
            fake.ping()
        except EngineUnreachableError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert time.monotonic() - t0 < 4 * FROZEN_S  # the lock is not held while waiting


def test_build_environment_is_content_addressed_and_recorded():
    fake = FakeBackend()
    env = EnvSpec(python="3.11", pip=["numpy==2.0.0"])
    said: list[str] = []
    tag = fake.build_environment(env, progress=said.append)
    assert tag == fake_env_tag(env) and tag.startswith(f"{FAKE_ENV_REPO}:") and len(tag.split(":")[1]) == 16
    assert fake.image_exists(tag) and said
    assert fake.build_environment(EnvSpec(python="3.11", pip=["numpy==2.0.0"])) == tag  # same spec, same tag
    assert FakeBackend().build_environment(env) == tag  # on any engine
    other = fake.build_environment(EnvSpec(python="3.12"))
    assert other != tag
    assert [(b.tag, b.cached) for b in fake.builds] == [(tag, False), (tag, True), (other, False)]
    assert fake.builds[0].env == env


def test_an_engine_that_cannot_build_says_so():
    fake = FakeBackend(builds_environments=False, engine_url="fake://remote")
    assert fake.builds_environments is False
    with pytest.raises(UnsupportedError, match="fake://remote"):
        fake.build_environment(EnvSpec())
    assert fake.builds == []


def test_export_import_between_fakes_and_a_missing_image():
    a, b = FakeBackend(images=["img:2"]), FakeBackend(engine_url="fake://b")
    b.import_image(a.export_image("img:2"))
    assert b.image_exists("img:2")
    with pytest.raises(ImageMissingError, match="img:3"):
        a.export_image("img:3")
    with pytest.raises(EngineError, match="not an image"):
        b.import_image([b"garbage"])


def test_put_file_and_copy_out_see_the_same_files(fake):
    cid = fake.run(_spec(code_archive=tar_of({"train.py": b"pass\n"})))
    fake.put_file(cid, "/workspace/artifacts/model.pt", b"weights")
    fake.finish(cid, 0)
    assert fake.files(cid) == {"/workspace/train.py": b"pass\n", "/workspace/artifacts/model.pt": b"weights"}
    names, files = tar_contents(fake.copy_out(cid, "/workspace"))
    assert names == {"workspace", "workspace/train.py", "workspace/artifacts", "workspace/artifacts/model.pt"}
    assert files["workspace/artifacts/model.pt"] == b"weights"
    with pytest.raises(ValueError, match="absolute"):
        fake.put_file(cid, "relative.txt", b"")


def test_copy_in_refuses_a_file_target_and_a_corrupt_archive(fake):
    cid = fake.run(_spec(code_archive=tar_of({"train.py": b"pass\n"})))
    with pytest.raises(EngineError, match="not a directory"):
        fake.copy_in(cid, "/workspace/train.py", tar_of({"x": b"x"}))
    with pytest.raises(EngineError, match="not a valid tar"):
        fake.copy_in(cid, "/workspace", b"not a tar" * 100)
    with pytest.raises(NotFoundError):
        fake.copy_out(cid, "/etc/passwd")  # the fake only knows what was put into it


def test_ports_get_distinct_host_ports_and_need_a_known_network(fake):
    fake.create_network("net-1", {"deepdock.job": "j"})
    a = fake.run(_spec("job-a", network="net-1", ports=[8080, 9090]))
    b = fake.run(_spec("job-b", network="net-1", ports=[8080]))
    ports = [*fake.inspect(a).ports.values(), *fake.inspect(b).ports.values()]
    assert len(set(ports)) == 3 and all(p >= 1024 for p in ports)
    assert fake.spec_of(a).ports == [8080, 9090]
    with pytest.raises(EngineError, match="needs a network"):
        fake.run(_spec("job-c", ports=[8080]))
    with pytest.raises(EngineError, match="invalid ports"):
        fake.run(_spec("job-c", network="net-1", ports=[70000]))
    with pytest.raises(EngineError, match="network net-2 not found"):
        fake.run(_spec("job-c", network="net-2"))
    assert fake.run(_spec("job-d", network="host"))  # engines' own networks need no create
