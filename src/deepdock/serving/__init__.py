"""The model server that runs inside a service container: a model version (TorchScript or ONNX) behind
the Open Inference Protocol (KServe v2) over HTTP, with the binary tensor extension, adaptive batching,
requests checked against the version's signature, and Prometheus metrics.

    python -m deepdock.serving --model-dir /model --port 8080 --max-batch-size 32 --max-wait-ms 2

``/model/deepdock-model.json`` names the model, its version, runtime, file and signature
(``serving/bundle.py``). Imports nothing from the server: numpy, orjson, prometheus-client, httptools (its
HTTP front, ``serving/http.py``; uvicorn only for ``--http asgi``) and the runtime's own library (torch or
onnxruntime) are all a serving image needs.
"""
