"""The backend contract and the ability contracts, run against the in-memory FakeBackend."""

from __future__ import annotations

import threading
import time

import pytest

from deepdock.compute.base import ComputeBackend
from deepdock.compute.testing.conformance import (
    BackendContract,
    FileTransferContract,
    FileTransferHarness,
    ImageTransferContract,
    ImageTransferHarness,
    NetworkingContract,
    VolumeStoreContract,
)
from deepdock.compute.testing.fake import FakeBackend, FakeClock

IMAGE = "deepdock/fake-image:1"


class FakeHarness(FileTransferHarness, ImageTransferHarness):
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.fake = FakeBackend(images=[IMAGE], clock=self.clock)
        self.backend = self.fake
        self.second = FakeBackend(clock=self.clock, engine_url="fake://second")
        self.image = IMAGE
        self.labels = {"deepdock.test": "contract"}
        self._images = 0

    def now(self) -> float:
        return self.clock()

    def run_exiting(self, output: str, exit_code: int, **overrides: object) -> str:
        cid = self.fake.run(self.spec(["sh", "-c", f"echo; exit {exit_code}"], **overrides))
        self.clock.advance(1.0)
        if output:
            self.fake.write_log(cid, output)
        self.fake.finish(cid, exit_code)
        return cid

    def run_long(self, **overrides: object) -> str:
        cid = self.fake.run(self.spec(["sleep", "300"], **overrides))
        self.clock.advance(0.01)  # distinct creation times keep "oldest first" meaningful
        return cid

    def run_ignoring_sigterm(self) -> str:
        cid = self.fake.run(self.spec(["sh", "-c", "trap '' TERM; sleep 300"]))
        self.fake.ignore_sigterm(cid)
        return cid

    def run_streaming(self, lines: list[str], interval_s: float) -> str:
        cid = self.fake.run(self.spec(["sh", "-c", "..."]))

        def emit() -> None:
            for line in lines:
                time.sleep(interval_s)
                self.fake.write_log(cid, line + "\n")
            self.fake.finish(cid, 0)

        threading.Thread(target=emit, daemon=True).start()
        return cid

    def run_writing(self, files: dict[str, bytes]) -> str:
        cid = self.fake.run(self.spec(["sh", "-c", "write files"]))
        for path, data in files.items():
            self.fake.put_file(cid, path, data)
        self.fake.finish(cid, 0)
        return cid

    def new_image(self) -> str:
        self._images += 1
        tag = f"deepdock/fake-new:{self._images}"
        self.fake.add_image(tag)
        return tag

    def unreachable_backend(self) -> tuple[ComputeBackend, str]:
        down = FakeBackend(images=[IMAGE], engine_url="fake://down")
        down.set_unreachable(True)
        return down, "fake://down"


@pytest.fixture
def harness() -> FakeHarness:
    return FakeHarness()


class TestFakeBackendContract(BackendContract):
    pass


class TestFakeFileTransfer(FileTransferContract):
    pass


class TestFakeNetworking(NetworkingContract):
    pass


class TestFakeVolumes(VolumeStoreContract):
    pass


class TestFakeImageTransfer(ImageTransferContract):
    pass
