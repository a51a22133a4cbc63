"""Who is using how much: dominant-resource fair shares (DRF) and quota guarantees.

A project's dominant share is the largest of its fractions of the cluster's CPUs, memory and GPUs. Ranking
by it (smallest first) is DRF's progressive filling, applied across projects and then across users.
Quotas are guarantees: a project within its quota may reclaim, by preemption, capacity that projects over
their own quota have borrowed.
"""

from __future__ import annotations

from deepdock.scheduler.types import EPSILON, ClusterState, JobRequest, Resources, RunningJob

Usage = list[float]  # [cpus, memory bytes, gpus]


def _demand(r: Resources, replicas: int) -> tuple[float, float, float]:
    return r.cpus * replicas, float(r.memory * replicas), r.gpus * replicas


class FairShare:
    def __init__(self, state: ClusterState) -> None:
        nodes = [n for n in state.nodes if n.schedulable]
        self.totals = (
            sum(n.cpus for n in nodes) or 1.0,
            float(sum(n.memory for n in nodes)) or 1.0,
            float(sum(len(n.gpus) for n in nodes)) or 1.0,
        )
        self.quotas = state.quotas
        self.by_project: dict[str, Usage] = {}
        self.by_user: dict[tuple[str, str], Usage] = {}
        # Dominant shares are read once per queued job when ranking; cache them until usage changes.
        self._cache: dict[object, float] = {}
        for rj in state.running:
            self.charge(rj.project, rj.user, rj.resources, rj.replicas)

    def charge(self, project: str, user: str, r: Resources, replicas: int, sign: float = 1.0) -> None:
        d = _demand(r, replicas)
        self._cache.clear()
        for usage in (self.by_project.setdefault(project, [0.0, 0.0, 0.0]),
                      self.by_user.setdefault((project, user), [0.0, 0.0, 0.0])):
            for i in range(3):
                usage[i] += sign * d[i]

    def charge_job(self, job: JobRequest) -> None:
        self.charge(job.project, job.user, job.resources, job.replicas)

    def discharge(self, rj: RunningJob) -> None:
        self.charge(rj.project, rj.user, rj.resources, rj.replicas, -1.0)

    def _dominant(self, usage: Usage | None) -> float:
        if not usage:
            return 0.0
        return max(usage[i] / self.totals[i] for i in range(3))

    def project_share(self, project: str) -> float:
        share = self._cache.get(project)
        if share is None:
            share = self._cache[project] = self._dominant(self.by_project.get(project))
        return share

    def user_share(self, project: str, user: str) -> float:
        key = (project, user)
        share = self._cache.get(key)
        if share is None:
            share = self._cache[key] = self._dominant(self.by_user.get(key))
        return share

    # ---- quotas ------------------------------------------------------------------------------
    def has_quotas(self) -> bool:
        return bool(self.quotas)

    def within_quota(self, job: JobRequest) -> bool:
        """Would the project still be within its guarantee with this job running?"""
        quota = self.quotas.get(job.project)
        if quota is None:
            return False
        used = self.by_project.get(job.project, [0.0, 0.0, 0.0])
        d = _demand(job.resources, job.replicas)
        limit = (quota.cpus, float(quota.memory), quota.gpus)
        return all(used[i] + d[i] <= limit[i] + EPSILON for i in range(3))

    def borrowing(self, project: str) -> bool:
        """Is the project using more than its guarantee in some resource (a project with none borrows
        everything it uses)?"""
        used = self.by_project.get(project)
        if not used:
            return False
        quota = self.quotas.get(project)
        if quota is None:
            return any(u > EPSILON for u in used)
        limit = (quota.cpus, float(quota.memory), quota.gpus)
        return any(used[i] > limit[i] + EPSILON for i in range(3))

    def quota_text(self, job: JobRequest) -> str | None:
        """Why the job is beyond its project's guarantee, or None if it is within it / there are none."""
        if not self.quotas:
            return None
        quota = self.quotas.get(job.project)
        used = self.by_project.get(job.project, [0.0, 0.0, 0.0])
        d = _demand(job.resources, job.replicas)
        if quota is None:
            return f"project {job.project!r} has no guaranteed quota; it can only borrow idle capacity"
        names = ("CPUs", "bytes of memory", "GPUs")
        limit = (quota.cpus, float(quota.memory), quota.gpus)
        for i in (2, 0, 1):
            if used[i] + d[i] > limit[i] + EPSILON:
                return (f"project {job.project!r} uses {used[i]:g} of its {limit[i]:g} guaranteed {names[i]} "
                        f"and this job needs {d[i]:g} more; no idle capacity is free to borrow")
        return None
