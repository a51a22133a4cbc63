"""LitServe serving the benchmark's TorchScript MLP (run by bench_serving_peers.py with the peer venv's python).

    python _serving_peer_litserve.py --model MODEL.pt --port P [--max-batch-size 32] [--batch-timeout-ms 2]

LitServe's own batching: ``LitAPI(max_batch_size, batch_timeout)``; each request is one sample,
``{"input": [256 numbers]}``, decoded to a 1-D tensor; LitServe's default ``batch`` stacks them into
[n, 256], its default ``unbatch`` splits the output rows back, and each answer is ``{"output": [10 numbers]}``.
One API server process and one inference worker (LitServe's defaults for one CPU device), torch at one thread;
the benchmark passes ``--fast-queue`` (ZeroMQ between them), the faster of LitServe's two queues here.
"""

from __future__ import annotations

import argparse

import litserve as ls
import torch


class MLPAPI(ls.LitAPI):
    def __init__(self, model_path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = torch.jit.load(self.model_path, map_location="cpu").eval()

    def decode_request(self, request: dict) -> torch.Tensor:
        return torch.tensor(request["input"], dtype=torch.float32)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)

    def encode_response(self, output: torch.Tensor) -> dict:
        return {"output": output.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queues instead of multiprocessing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    api = MLPAPI(args.model, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, fast_queue=args.fast_queue)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
