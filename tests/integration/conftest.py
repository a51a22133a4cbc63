"""Fixtures for tests against real engines: a tiny offline test image and a second engine.

No registry is reachable, so the test image is built from the host's static busybox
(Debian: ``apt-get install busybox-static``) with ``docker import``: sh, sleep, echo, cat, head,
dd, awk, ... as busybox applets, plus a root user and an unprivileged ``app`` user (uid 1000).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Same label as tests/conftest.py's TEST_LABEL: everything a test creates carries it.
TEST_LABEL = "deepdock.test"
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
TEST_USER = "app"
TEST_UID = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]
SECOND_ENGINE_SCRIPT = REPO_ROOT / "scripts" / "second_engine.sh"
SECOND_ENGINE_URL = "unix:///run/deepdock-engine2.sock"
# The same engine's mutual-TLS listener and the certificates second_engine.sh made for it.
SECOND_ENGINE_TLS_URL = "tcp://127.0.0.1:23761"
SECOND_ENGINE_TLS_DIR = Path("/etc/deepdock-engine2/tls")
# A fresh dockerd needs a few seconds to come up; the script waits this long at most.
SECOND_ENGINE_START_TIMEOUT_S = 60


def _static_busybox() -> str:
    for path in BUSYBOX_PATHS:
        # A dynamically linked busybox (Debian's "busybox" package) names its loader; it cannot run
        # alone in an image, so only the static build ("busybox-static") will do.
        if os.path.exists(path) and b"/ld-linux" not in Path(path).read_bytes():
            return path
    pytest.fail(
        "a static busybox is required for the integration test image: apt-get install -y busybox-static",
        pytrace=False,
    )


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644, **kw) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    for key, value in kw.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def busybox_rootfs_tar() -> bytes:
    """A root filesystem: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group, /tmp."""
    busybox = _static_busybox()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as tar:
        for d in ("bin", "etc", "home", f"home/{TEST_USER}", "proc", "sys", "dev", "root"):
            uid = TEST_UID if d.endswith(TEST_USER) else 0
            _add(tar, d, mode=0o755, type=tarfile.DIRTYPE, uid=uid, gid=uid)
        _add(tar, "tmp", mode=0o1777, type=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", data=Path(busybox).read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "busybox":
                _add(tar, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        passwd = f"root:x:0:0:root:/root:/bin/sh\n{TEST_USER}:x:{TEST_UID}:{TEST_UID}::/home/{TEST_USER}:/bin/sh\n"
        _add(tar, "etc/passwd", data=passwd.encode())
        _add(tar, "etc/group", data=f"root:x:0:\n{TEST_USER}:x:{TEST_UID}:\n".encode())
    return out.getvalue()


def import_image(api, rootfs: bytes, repository: str, tag: str, changes: list[str] | None = None) -> str:
    """``docker import`` of a rootfs tar, labelled as a test object; returns ``repository:tag``."""
    all_changes = [f"LABEL {TEST_LABEL}=session", "ENV PATH=/usr/bin:/bin",  # /usr/bin: where the NVIDIA hook puts nvidia-smi
                   'CMD ["sh"]', *(changes or [])]
    api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=all_changes)
    return f"{repository}:{tag}"


@pytest.fixture(scope="session")
def busybox_rootfs() -> bytes:
    return busybox_rootfs_tar()


@pytest.fixture(scope="session")
def busybox_image(docker_client, busybox_rootfs) -> Iterator[str]:
    """A tiny local image (root by default) with busybox applets; unique per session, removed after."""
    ref = import_image(docker_client.api, busybox_rootfs, "deepdock-test-busybox", uuid.uuid4().hex[:12])
    yield ref
    docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="session")
def busybox_user_image(docker_client, busybox_rootfs) -> Iterator[str]:
    """The same image whose configured user is the unprivileged ``app`` (uid 1000)."""
    ref = import_image(
        docker_client.api,
        busybox_rootfs,
        "deepdock-test-busybox-app",
        uuid.uuid4().hex[:12],
        [f"USER {TEST_USER}"],
    )
    yield ref
    docker_client.images.remove(ref, force=True)


def _engine_answers(url: str) -> bool:
    import docker

    try:
        client = docker.APIClient(base_url=url, version="1.41", timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


@pytest.fixture(scope="session")
def second_engine(docker_client, busybox_image) -> Iterator[str]:
    """URL of a second dockerd on this machine (scripts/second_engine.sh), with ``busybox_image`` loaded.

    Started if it does not answer yet and then stopped at the end; one that was already running is
    left running (another session may be using it).
    """
    import docker

    started = False
    if not _engine_answers(SECOND_ENGINE_URL):
        if shutil.which("dockerd") is None or os.geteuid() != 0:
            pytest.fail("a second engine needs root and dockerd (scripts/second_engine.sh)", pytrace=False)
        proc = subprocess.run(
            ["bash", str(SECOND_ENGINE_SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=SECOND_ENGINE_START_TIMEOUT_S + 10,
        )
        if proc.returncode != 0:
            pytest.fail(f"second engine did not start:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
        started = True
    client = docker.APIClient(base_url=SECOND_ENGINE_URL, version="1.41", timeout=120)
    saved = b"".join(docker_client.api.get_image(busybox_image))
    client.load_image(saved)
    try:
        yield SECOND_ENGINE_URL
    finally:
        if _engine_answers(SECOND_ENGINE_URL):
            for c in client.containers(all=True, filters={"label": TEST_LABEL}):
                client.remove_container(c["Id"], force=True)
            try:
                client.remove_image(busybox_image, force=True)
            except Exception:  # noqa: BLE001 - the engine is stopped below anyway when we started it
                pass
        client.close()
        if started:
            subprocess.run(["bash", str(SECOND_ENGINE_SCRIPT), "stop"], capture_output=True, timeout=60)


# Read by the second engine's fake NVIDIA hook (tests/integration/fake_nvidia): the GPUs that engine has.
FAKE_GPUS_FILE = Path("/run/deepdock-fake-nvidia/gpus.csv")
# index, uuid, name, memory.total MiB, memory.used MiB, utilization.gpu %, temperature.gpu C, power.draw W
TWO_H100 = ["0, GPU-fake-0, NVIDIA H100 80GB HBM3, 81559, 61440, 97, 64, 512.32",
            "1, GPU-fake-1, NVIDIA H100 80GB HBM3, 81559, 4, 0, 31, 69.75"]


def give_fake_gpus(lines: list[str] = TWO_H100) -> None:
    """The second engine's fake NVIDIA hook reports these devices (one line each) from now on."""
    FAKE_GPUS_FILE.parent.mkdir(parents=True, exist_ok=True)
    FAKE_GPUS_FILE.write_text("".join(line + "\n" for line in lines))


def take_fake_gpus() -> None:
    """No GPU driver on the second engine again: its hook fails every GPU container."""
    FAKE_GPUS_FILE.unlink(missing_ok=True)


@pytest.fixture
def fake_gpus(second_engine) -> Iterator[Callable[[list[str]], None]]:
    """The second engine gets two H100s from its fake NVIDIA hook (the engine's nvidia device driver,
    the OCI hook and the injected nvidia-smi are real; the readings are these lines). Yields a function
    that sets other readings; afterwards the engine has no GPU driver again."""
    give_fake_gpus()
    try:
        yield give_fake_gpus
    finally:
        take_fake_gpus()


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def python_image(docker_client) -> str:
    """The offline python base (`deepdock base bootstrap`, which the test command runs first): a job image
    with a Python, for the SDK's tests, that needs no registry and no build."""
    from deepdock.envs.base import offline_image_name

    name = offline_image_name("3.11")
    try:
        docker_client.images.get(name)
    except Exception:  # noqa: BLE001 - any failure means it is not there
        pytest.fail(f"the offline python base {name} is missing: run `deepdock base bootstrap`", pytrace=False)
    return name


@pytest.fixture(scope="session")
def env_home(tmp_path_factory):
    """A fresh deepdock home (lock/wheelhouse caches) for the session; no PyTorch index (see tests/envs)."""
    from deepdock.settings import get_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPDOCK_HOME", str(tmp_path_factory.mktemp("deepdock-home")))
    mp.setenv("DEEPDOCK_PYTORCH_INDEX_URL", "")
    get_settings.cache_clear()
    yield
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def netns_hosts():
    """Docker hosts in network namespaces (tests/integration/netns.py), started once for the session."""
    from tests.integration.netns import hosts_session

    yield from hosts_session()


def remove_labelled(docker_client, labels: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Every container, then every image, carrying ``labels`` (a test module's own run label)."""
    flt = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for container in docker_client.containers.list(all=True, filters=flt):
        container.remove(force=True)
    for image in docker_client.images.list(filters=flt):
        try:
            docker_client.images.remove(image.id, force=True)
        except Exception:  # noqa: BLE001 - removed already with a child
            pass
