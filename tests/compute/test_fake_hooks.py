"""What the fake offers beyond the contract: test hooks the server's logic tests rely on."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from deepdock.compute.base import ContainerSpec, ContainerStats, GpuInfo
from deepdock.compute.fake import FakeBackend, FakeClock
from deepdock.errors import EngineError, EngineUnreachableError, SpecError

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
