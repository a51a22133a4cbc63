"""Shared by the services test and bench_services: a bounded load on a service's endpoint, and model
versions put straight into a server's registry (an ONNX file made by the test, no training job)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

FEATURES = 64
SIGNATURE = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, FEATURES]}],
             "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]}


@dataclass
class Load:
    """``clients`` threads calling the endpoint in a loop until stopped (each bounded by ``limit`` calls),
    ``interval_s`` apart; every outcome and latency is kept."""

    url: str
    token: str
    body: dict[str, Any]
    clients: int = 1
    interval_s: float = 0.01
    limit: int = 20_000
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    outputs: list[list[float]] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def total(self) -> int:
        return self.ok + len(self.failed)

    def _run(self) -> None:
        content = orjson.dumps(self.body)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=10) as http:
            for _ in range(self.limit):
                if self._stop.is_set():
                    return
                sent = time.perf_counter()
                try:
                    r = http.post(self.url, content=content)
                    outcome = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    r, outcome = None, repr(exc)
                with self._lock:
                    self.latencies_s.append(time.perf_counter() - sent)
                    if outcome is None and r is not None:
                        self.ok += 1
                        self.outputs.append(r.json()["outputs"][0]["data"])
                    else:
                        self.failed.append(outcome or "?")
                if self.interval_s:
                    time.sleep(self.interval_s)


def infer_body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def register_onnx_version(home: Path, onnx_file: Path, name: str = "digits-mlp") -> int:
    """The next version of ``name`` with this ONNX file, written into the server's database and local
    artifact store under ``home`` (what `model register` + `model export --format onnx` would leave)."""
    from tests.server.factories import make_model_version

    from deepdock.artifacts import store_from_url
    from deepdock.server.db.session import Database
    from deepdock.settings import Settings

    db = Database(Settings(home=home).db_url)
    try:
        store = store_from_url("", local_root=home / "artifacts")
        with db.session() as session:
            version = make_model_version(session, store, name, signature=SIGNATURE, onnx=onnx_file.read_bytes())
            session.commit()
            return int(version.version)
    finally:
        db.dispose()
