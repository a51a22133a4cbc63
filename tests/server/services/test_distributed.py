"""services/distributed.py: which network a gang gets, its environment contract, the command's variables,
and the preamble that names the node's interface for gloo/NCCL on host networking."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deepdock.api.enums import AttemptNetwork
from deepdock.server.db.models import Node
from deepdock.server.services.distributed import (
    HOST_INTERFACE_PREAMBLE,
    attempt_network,
    expand_command,
    launch_command,
    node_address,
    one_node_only,
    processes_per_replica,
    rank_env,
)
from deepdock.specs.job import JobSpec

ROUTE_TABLE = Path("/proc/net/route")


def spec(**fields: object) -> JobSpec:
    return JobSpec.model_validate({"name": "ddp", "image": "busybox:latest", "command": ["true"], **fields})


@pytest.mark.parametrize(("fields", "granted", "nodes", "one_node", "network"), [
    ({}, False, ["a"], False, AttemptNetwork.NONE),
    ({"replicas": 2}, False, ["a", "a"], True, AttemptNetwork.PRIVATE),
    ({"replicas": 2}, True, ["a", "a"], False, AttemptNetwork.PRIVATE),
    ({"replicas": 2}, True, ["a", "b"], False, AttemptNetwork.HOST),
    ({"replicas": 2, "network": "private"}, True, ["a", "a"], True, AttemptNetwork.PRIVATE),
    ({"replicas": 2, "network": "none"}, False, ["a", "b"], False, AttemptNetwork.NONE),
    ({"replicas": 2, "network": "host"}, True, ["a", "a"], False, AttemptNetwork.HOST),
    ({"network": "private"}, False, ["a"], False, AttemptNetwork.PRIVATE),
])
def test_the_network_follows_the_spec_the_grant_and_the_placement(fields, granted, nodes, one_node, network):
    job = spec(**fields)
    assert one_node_only(job, granted) is one_node
    assert attempt_network(job, nodes) == network


def test_rank_env_is_torchruns_contract_and_deepdocks():
    job = spec(replicas=3, resources={"gpus": 2})
    env = rank_env(job, AttemptNetwork.HOST, 2, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], 29511, "ddp-1-2")
    assert env["RANK"] == "2" and env["WORLD_SIZE"] == "3" and env["LOCAL_RANK"] == "0"
    assert env["MASTER_ADDR"] == "10.0.0.1" and env["MASTER_PORT"] == "29511"
    assert env["DEEPDOCK_NNODES"] == "3" and env["DEEPDOCK_NODE_RANK"] == "2"
    assert env["DEEPDOCK_NPROC_PER_NODE"] == "2"  # one per whole GPU
    assert env["DEEPDOCK_NODE_ADDRS"] == "10.0.0.1,10.0.0.2,10.0.0.3" and env["DEEPDOCK_NODE_ADDR"] == "10.0.0.3"
    assert env["DEEPDOCK_NODE_ADDR_HEX"] == "0300000A"  # as /proc/net/route writes 10.0.0.3
    assert "GLOO_SOCKET_IFNAME" not in env  # found inside the container, by the preamble
    assert env["NCCL_HOSTID"] == "ddp-1-2"  # two ranks on one node are not one NCCL host


def test_a_private_network_names_eth0_unless_the_job_chose():
    env = rank_env(spec(replicas=2, env={"NCCL_SOCKET_IFNAME": "ib0"}), AttemptNetwork.PRIVATE, 0, ["c0", "c1"], 29500)
    assert env["GLOO_SOCKET_IFNAME"] == "eth0" and "NCCL_SOCKET_IFNAME" not in env  # the job's own wins
    assert env["MASTER_ADDR"] == "c0"


def test_processes_per_replica_is_explicit_or_one_per_whole_gpu():
    assert processes_per_replica(spec()) == 1
    assert processes_per_replica(spec(resources={"gpus": 0.5})) == 1
    assert processes_per_replica(spec(resources={"gpus": 4})) == 4
    assert processes_per_replica(spec(resources={"gpus": 4}, processes_per_replica=2)) == 2


def test_only_the_platforms_variables_are_expanded_in_the_command():
    platform = {"DEEPDOCK_NNODES": "2", "MASTER_PORT": "29501"}
    command = ["torchrun", "--nnodes=$DEEPDOCK_NNODES", "--port=${MASTER_PORT}", "$HOME", "echo $$", "$MASTER_PORTX",
               "for i in 1; do echo $$MASTER_PORT $$HOME; done"]
    assert expand_command(command, platform) == ["torchrun", "--nnodes=2", "--port=29501", "$HOME", "echo $$",
                                                 "$MASTER_PORTX", "for i in 1; do echo $MASTER_PORT $$HOME; done"]


def test_the_node_address_is_given_or_the_engine_urls_host_or_loopback():
    assert node_address(Node(name="a", engine_url="tcp://10.1.2.3:2375", address="")) == "10.1.2.3"
    assert node_address(Node(name="a", engine_url="tcp://10.1.2.3:2375", address="192.168.1.5")) == "192.168.1.5"
    assert node_address(Node(name="a", engine_url="unix:///var/run/docker.sock", address="")) == "127.0.0.1"
    assert node_address(Node(name="a", engine_url="", address="")) == "127.0.0.1"


def _preamble(env: dict[str, str]) -> str:
    command = launch_command(["sh", "-c", 'echo "$GLOO_SOCKET_IFNAME/$NCCL_SOCKET_IFNAME"'], AttemptNetwork.HOST)
    assert command[:3] == ["/bin/sh", "-c", HOST_INTERFACE_PREAMBLE]
    return subprocess.run(command, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()


@pytest.mark.skipif(not ROUTE_TABLE.exists(), reason="needs Linux's /proc/net/route")
def test_the_preamble_finds_the_interface_whose_subnet_holds_the_node_address():
    # This machine's own routes: the interface of the first subnet route, and an address inside it.
    # Little-endian hex: the last octet is the most significant byte, so 0x01000000 is host ".1".
    rows = [line.split() for line in ROUTE_TABLE.read_text().splitlines()[1:]]
    subnets = [(r[0], int(r[1], 16), int(r[7], 16)) for r in rows if r[7] not in ("00000000", "FFFFFFFF")]
    if not subnets:
        pytest.skip("no subnet route on this machine")
    iface, dest, mask = subnets[0]
    inside = f"{dest | (0x01000000 & ~mask):08X}"
    assert _preamble({"DEEPDOCK_NODE_ADDR_HEX": inside}) == f"{iface}/={iface}"
    # A job's own choice wins; an address on no subnet here names none.
    assert _preamble({"DEEPDOCK_NODE_ADDR_HEX": inside, "GLOO_SOCKET_IFNAME": "mine"}) == "mine/=mine"
    nowhere = 0xFEFEFEFE
    if not any(nowhere & m == d for _, d, m in subnets):
        assert _preamble({"DEEPDOCK_NODE_ADDR_HEX": f"{nowhere:08X}"}) == "/"


def test_the_preamble_prefers_the_most_specific_route_not_via_a_gateway(tmp_path):
    # The preamble reads /proc/net/route; here the same loop reads a table with a wider route first.
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
                     "tun0\t0000000A\t0101A8C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n"   # 10/8 via a gateway
                     "wide0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"  # 10/8 on link
                     "eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")  # 10.0.1/24
    script = HOST_INTERFACE_PREAMBLE.replace("/proc/net/route", str(table))
    out = subprocess.run(["/bin/sh", "-c", script, "launch", "sh", "-c", 'echo "$GLOO_SOCKET_IFNAME"'],
                         env={"PATH": "/usr/bin:/bin", "DEEPDOCK_NODE_ADDR_HEX": "0501000A"},  # 10.0.1.5
                         capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    assert out == "eth0"


def test_a_nodes_address_is_stored_as_ipv4():
    from deepdock.errors import SpecError
    from deepdock.server.services.distributed import resolve_address

    assert resolve_address("", "tcp://10.1.2.3:2375") == "10.1.2.3"
    assert resolve_address("192.168.0.7", "tcp://gpu1:2376") == "192.168.0.7"
    assert resolve_address("localhost", "") == "127.0.0.1"  # a name, resolved once at node add
    assert resolve_address("", "unix:///var/run/docker.sock") == ""
    with pytest.raises(SpecError, match="does not resolve"):
        resolve_address("no-such-host.invalid", "")
