"""BentoML serving the benchmark's TorchScript MLP (``bentoml serve _serving_peer_bentoml:MLP`` from the peer venv).

The model path comes from ``PEER_MODEL``, the batch cap from ``PEER_MAX_BATCH_SIZE`` (32). BentoML's own
adaptive batching: ``@bentoml.api(batchable=True, max_batch_size=...)``, whose dispatcher decides how long to
wait from a cost model it fits to the model's timings (there is no fixed max-wait knob; ``max_latency_ms`` is a
deadline past which queued requests are answered 503, left at BentoML's default of 60 s). Each request is one
sample, ``{"input": [[256 numbers]]}`` (an ndarray [1, 256] that the dispatcher concatenates along dimension 0);
the answer is the [1, 10] output as JSON. One worker, access log off (deepdock writes none), torch at one thread.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import torch

MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "32"))


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class MLP:
    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = torch.jit.load(os.environ["PEER_MODEL"], map_location="cpu").eval()

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_SIZE)
    def predict(self, input: np.ndarray) -> np.ndarray:  # noqa: A002 - the request's field name
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(input, dtype=np.float32))).numpy()
