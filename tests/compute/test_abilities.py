"""``ability()`` and ``copy_image()``: a node without an ability gets a sentence, never an AttributeError."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deepdock.compute.abilities import (
    FileTransfer,
    ImageProvision,
    Networking,
    StatsSource,
    ability,
    copy_image,
)
from deepdock.compute.base import ComputeBackend, ContainerSpec, ContainerState, NodeCapacity
from deepdock.compute.testing.fake import FakeBackend
from deepdock.errors import EngineError, UnsupportedError

ALL_ABILITIES = [StatsSource, ImageProvision, FileTransfer, Networking]


class BareBackend(ComputeBackend):
    """The protocol and nothing else (what a minimal future backend may be)."""

    engine_url = "bare://one"

    def __init__(self, images: set[str] | None = None) -> None:
        self.images = images or set()

    def ping(self) -> None: ...

    def capacity(self) -> NodeCapacity:
        return NodeCapacity(cpus=1, memory=1, gpus=[], engine_version="bare", os="linux", arch="x86_64")

    def run(self, spec: ContainerSpec) -> str:
        raise NotImplementedError

    def inspect(self, container_id: str) -> ContainerState:
        raise NotImplementedError

    def list_containers(self, labels: dict[str, str]) -> list[ContainerState]:
        return []

    def logs(self, container_id: str, since: float | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        return iter(())

    def stop(self, container_id: str, grace_s: float) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def image_exists(self, ref: str) -> bool:
        return ref in self.images

    def close(self) -> None: ...


@pytest.mark.parametrize("kind", ALL_ABILITIES)
def test_a_missing_ability_is_unsupported_naming_the_node(kind):
    with pytest.raises(UnsupportedError, match="node n1") as info:
        ability(BareBackend(), kind, node="n1")
    assert "BareBackend" in info.value.message
    assert info.value.details == {"node": "n1", "ability": kind.__name__}
    assert isinstance(info.value, EngineError) and info.value.status_code == 422


def test_without_a_node_name_the_engine_is_named():
    with pytest.raises(UnsupportedError, match="engine bare://one .*cannot copy files"):
        ability(BareBackend(), FileTransfer)


@pytest.mark.parametrize("kind", ALL_ABILITIES)
def test_the_fake_has_every_ability(kind):
    fake = FakeBackend()
    assert ability(fake, kind, node="n1") is fake


def test_copy_image_to_a_node_that_cannot_receive_images_names_it():
    source = FakeBackend(images=["img:1"])
    with pytest.raises(UnsupportedError, match="node n2 .*receive environment images"):
        copy_image(source, BareBackend(), "img:1", node="n2")
    # Already there: nothing to move, so no ability is needed.
    assert copy_image(source, BareBackend(images={"img:1"}), "img:1", node="n2") is False


def test_copy_image_from_a_source_without_the_ability():
    with pytest.raises(UnsupportedError, match="bare://one"):
        copy_image(BareBackend(images={"img:1"}), FakeBackend(), "img:1")
