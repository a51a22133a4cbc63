"""deepdock's demo job: train a small classifier on scikit-learn's bundled digits data with PyTorch.

Runs inside a resource-limited container; writes its model and metrics to $DEEPDOCK_ARTIFACTS_DIR and
prints ``test_accuracy=<value>`` as its last line, which `deepdock demo` reads back.
"""

import json
import os
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

EPOCHS = int(os.environ.get("EPOCHS", "40"))
BATCH_SIZE = 64
SEED = 0


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, int(float(os.environ.get("DEEPDOCK_CPUS", "1")))))
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=SEED, stratify=y)
    x_train, x_test = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_test, dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    samples = 0
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            samples += len(idx)
        if epoch % 10 == 0 or epoch == EPOCHS - 1:
            print(f"epoch {epoch:3d} loss {loss.item():.4f}", flush=True)
    elapsed = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    out = Path(os.environ.get("DEEPDOCK_ARTIFACTS_DIR", "artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    metrics = {"test_accuracy": accuracy, "train_seconds": elapsed, "samples_per_second": samples / elapsed}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"samples_per_second={samples / elapsed:.1f}", flush=True)
    print(f"test_accuracy={accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
