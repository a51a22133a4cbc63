"""The simulator on tiny hand-computed traces, the trace/cluster formats, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepdock.errors import SpecError
from deepdock.scheduler import GPU, NodeState, Resources, get_policy
from deepdock.sim.cluster import load_cluster
from deepdock.sim.metrics import summarize
from deepdock.sim.simulator import simulate
from deepdock.sim.trace import TraceJob, load_trace

GIB = 1024**3


def _job(jid: str, submit: float, duration: float, gpus: float, **kw) -> TraceJob:
    return TraceJob(jid, submit, duration, Resources(1, GIB, gpus), **kw)


def _node(gpus: int) -> list[NodeState]:
    return [NodeState("n0", 16, 64 * GIB, [GPU(i, "a100", 80 * GIB) for i in range(gpus)])]


def test_fifo_metrics_by_hand() -> None:
    jobs = [_job("a", 0, 10, 2), _job("b", 1, 5, 1), _job("c", 2, 3, 1)]
    res = simulate(jobs, _node(2), get_policy("fifo"))
    assert [(res.jobs[j].start_time, res.jobs[j].end_time) for j in "abc"] == [(0, 10), (10, 15), (10, 13)]
    m = summarize(res)
    assert m["jct_mean"] == pytest.approx((10 + 14 + 11) / 3)
    assert m["queue_mean"] == pytest.approx((0 + 9 + 8) / 3)
    assert m["makespan"] == 15
    assert m["gpu_utilization"] == pytest.approx((20 + 5 + 3) / (2 * 15))
    assert m["preemptions"] == 0
    assert res.jobs["b"].placements[0].node == "n0"


def test_strict_fifo_blocks_where_backfill_does_not() -> None:
    jobs = [_job("a", 0, 10, 1), _job("big", 1, 10, 2), _job("small", 2, 3, 1)]
    fifo = simulate(jobs, _node(2), get_policy("fifo"))
    backfill = simulate(jobs, _node(2), get_policy("fifo-backfill"))
    assert fifo.jobs["small"].start_time == 20, "behind big, which waits for a"
    assert backfill.jobs["small"].start_time == 2


def test_srtf_preempts_and_pays_restart_penalty() -> None:
    jobs = [_job("long", 0, 100, 1), _job("short", 10, 5, 1)]
    res = simulate(jobs, _node(1), get_policy("srtf"))
    assert res.jobs["short"].start_time == 10 and res.jobs["short"].end_time == 15
    # 10 s done before preemption, 90 s left, plus the 7 s one-GPU checkpoint-restart penalty.
    assert res.jobs["long"].starts == [0, 15]
    assert res.jobs["long"].end_time == 15 + 90 + 7
    assert summarize(res)["preemptions"] == 1


def test_estimates_hidden_from_non_clairvoyant_policies() -> None:
    # With estimates SJF would run "short" first; the default policy must not see them.
    jobs = [_job("running", 0, 10, 1), _job("long", 1, 100, 1), _job("short", 2, 1, 1)]
    sjf = simulate(jobs, _node(1), get_policy("sjf"))
    assert sjf.jobs["short"].start_time == 10
    fb = simulate(jobs, _node(1), get_policy("fifo-backfill"))
    assert fb.jobs["long"].start_time == 10


def test_jobs_that_can_never_fit_are_rejected_not_stuck() -> None:
    res = simulate([_job("huge", 0, 10, 8), _job("ok", 0, 10, 1)], _node(2), get_policy("default"))
    assert res.jobs["huge"].rejected is not None and res.jobs["ok"].end_time == 10
    assert summarize(res)["rejected"] == 1


def test_gang_of_whole_nodes_starts_all_at_once() -> None:
    nodes = [NodeState(f"n{i}", 16, 64 * GIB, [GPU(k, "a100", 80 * GIB) for k in range(8)]) for i in range(2)]
    jobs = [_job("one", 0, 50, 8), _job("gang", 1, 10, 8, replicas=2)]
    res = simulate(jobs, nodes, get_policy("fifo"))
    assert res.jobs["gang"].start_time == 50
    assert sorted(p.node for p in res.jobs["gang"].placements) == ["n0", "n1"]


def test_trace_csv_and_jsonl_and_errors(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,submit_time,duration,gpus,gpu_fraction,replicas,memory,project\n"
                        "x,5,10,,0.5,1,4g,p\ny,1,20,2,,2,,\n")
    jobs = load_trace(csv_path)
    assert [j.id for j in jobs] == ["y", "x"]
    assert jobs[1].resources.gpus == 0.5 and jobs[1].resources.memory == 4 * GIB and jobs[1].project == "p"
    assert jobs[0].replicas == 2
    jl = tmp_path / "t.jsonl"
    jl.write_text(json.dumps({"id": "z", "submit_time": 0, "duration": 3, "gpus": 1}) + "\n")
    assert load_trace(jl)[0].id == "z"
    bad = tmp_path / "bad.csv"
    bad.write_text("id,submit_time,duration,gpus\nq,0,10,1.5\n")
    with pytest.raises(SpecError, match="row 2"):
        load_trace(bad)


def test_trace_gpu_memory_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,submit_time,duration,gpus,gpu_memory\na,0,10,1,40g\nb,0,10,1,\n")
    jobs = {j.id: j for j in load_trace(path)}
    assert jobs["a"].gpu_memory == 40 * GIB and jobs["b"].gpu_memory is None
    path.write_text("id,submit_time,duration,gpus,gpu_memory\nc,0,10,0,40g\n")
    with pytest.raises(SpecError, match="gpu_memory must be positive and needs gpus"):
        load_trace(path)


def test_simulator_honours_gpu_memory(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("nodes:\n  - {name: small, cpus: 16, memory: 64g, gpus: 4, gpu_memory: 24g}\n"
                    "  - {name: big, cpus: 16, memory: 64g, gpus: 1, gpu_memory: 80g}\n")
    jobs = [_job("a", 0, 10, 1, gpu_memory=40 * GIB), _job("b", 0, 10, 1, gpu_memory=40 * GIB),
            _job("c", 0, 10, 1), _job("huge", 0, 10, 1, gpu_memory=96 * GIB)]
    res = simulate(jobs, load_cluster(path), get_policy("fifo-backfill"))
    assert res.jobs["a"].placements[0].node == "big" and res.jobs["a"].start_time == 0
    assert res.jobs["b"].placements[0].node == "big" and res.jobs["b"].start_time == 10, "waits for the big GPU"
    assert res.jobs["c"].placements[0].node == "small" and res.jobs["c"].start_time == 0
    assert res.jobs["huge"].rejected == "needs GPUs with at least 96.0 GiB; the largest here have 80.0 GiB"


def test_cluster_yaml_groups_and_quotas(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("nodes:\n  - {name: gpu, count: 3, cpus: 32, memory: 256g, gpus: 4, gpu_type: h100}\n"
                    "  - {name: cpu, cpus: 8, memory: 16g}\nquotas:\n  research: {gpus: 4}\n")
    spec = load_cluster(path)
    nodes = spec.to_nodes()
    assert [n.name for n in nodes] == ["gpu-0", "gpu-1", "gpu-2", "cpu"]
    assert nodes[0].gpus[3].type == "h100" and nodes[3].gpus == []
    assert spec.to_quotas()["research"].gpus == 4
    path.write_text("nodes:\n  - {name: a, cpus: 1, memory: 1g, colour: red}\n")
    with pytest.raises(SpecError, match="unknown field"):
        load_cluster(path)


def _tiny_philly(folder: Path) -> Path:
    folder.mkdir()
    (folder / "vcs.csv").write_text("vc,gpus\nvc1,16\n")
    (folder / "philly.csv").write_text("cluster,timestamp,num_gpus,duration\n"
                                       "vc1,2017-10-01 00:00:00,1,100\nvc1,2017-10-01 00:01:00,12,50\n"
                                       "vc1,2017-09-30 23:59:59,1,10\nother,2017-10-02 00:00:00,1,10\n")
    return folder


def test_philly_folder_is_the_callers(tmp_path: Path) -> None:
    from deepdock.sim.runner import load_workload

    parts = load_workload("philly", None, 1.0, _tiny_philly(tmp_path / "philly"))
    assert [p.name for p in parts] == ["vc1"] and len(parts[0].nodes) == 2
    assert [(j.replicas, j.resources.gpus) for j in parts[0].jobs] == [(1, 1.0), (2, 8.0)]


def test_cli_sim_reads_the_philly_folder_from_settings(tmp_path: Path, monkeypatch) -> None:
    from deepdock.cli.main import app
    from deepdock.settings import get_settings

    monkeypatch.setenv("DEEPDOCK_PHILLY_DIR", str(_tiny_philly(tmp_path / "philly")))
    get_settings.cache_clear()
    try:
        assert get_settings().philly_dir == tmp_path / "philly"
        result = CliRunner().invoke(app, ["sim", "--trace", "philly", "--policy", "fifo", "--workers", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "2 jobs" in result.output


def test_cli_sim_prints_table_and_writes_json(tmp_path: Path) -> None:
    from deepdock.cli.main import app

    trace = tmp_path / "t.csv"
    trace.write_text("id,submit_time,duration,gpus\na,0,10,2\nb,1,5,1\nc,2,3,1\n")
    cluster = tmp_path / "c.yaml"
    cluster.write_text("nodes:\n  - {name: n, cpus: 16, memory: 64g, gpus: 2}\n")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["sim", "--trace", str(trace), "--cluster", str(cluster),
                                      "--policy", "fifo", "--policy", "default", "--json", str(out),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "fifo" in result.output and "default" in result.output
    rows = json.loads(out.read_text())["results"]
    assert [r["policy"] for r in rows] == ["fifo", "default"]
    assert rows[0]["jct_mean"] == pytest.approx(35 / 3)
    bad = CliRunner().invoke(app, ["sim", "--trace", str(trace), "--cluster", str(cluster), "--policy", "nope"])
    assert bad.exit_code == 2 and "unknown scheduling policy" in bad.output
