"""deepdock's demo job: train a small classifier on scikit-learn's bundled digits data with PyTorch.

Runs inside a resource-limited container and uses the platform's SDK (``from deepdock import sdk``, put
into every job by the server): params and a loss/accuracy curve logged every step, a checkpoint every
``CHECKPOINT_EVERY`` epochs and when the job is asked to stop (a preemption resumes from it), and the
trained model registered as ``digits-mlp`` with an example input (its signature). Training is
deterministic (seeded, deterministic algorithms, a fixed thread count), so a re-run or a resumed run
gives bit-identical weights; their sha256 is printed as ``weights_sha256=...``.
Prints ``test_accuracy=<value>`` as its last line, which `deepdock demo` reads back.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepdock import sdk

EPOCHS = int(os.environ.get("EPOCHS", "40"))
BATCH_SIZE = 64
# The weights' seed (SEED=1 trains a second, different version); the held-out split never moves, so
# every version is judged on the same digits.
SEED = int(os.environ.get("SEED", "0"))
SPLIT_SEED = 0
LR = 3e-3
CHECKPOINT_EVERY = int(os.environ.get("CHECKPOINT_EVERY", "5"))
# Seconds to sleep after each epoch: lets a test preempt the job mid-training (0 in the demo).
EPOCH_PAUSE_S = float(os.environ.get("EPOCH_PAUSE_S", "0"))
MODEL_NAME = os.environ.get("MODEL_NAME", "digits-mlp")


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, int(float(os.environ.get("DEEPDOCK_CPUS", "1")))))
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=SPLIT_SEED, stratify=y)
    x_train, x_test = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_test, dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    sdk.log_params(lr=LR, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED, hidden=128, dropout=0.1)
    start_epoch, step = 0, 0
    state = sdk.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        print(f"resumed from epoch {state['epoch']} (step {step})", flush=True)
    started = time.perf_counter()
    samples = 0
    for epoch in range(start_epoch, EPOCHS):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            optimizer.zero_grad()
            logits = model(x_train[idx])
            loss = loss_fn(logits, y_train[idx])
            loss.backward()
            optimizer.step()
            samples += len(idx)
            step += 1
            sdk.log_metrics(step, loss=loss.item(), train_acc=(logits.argmax(dim=1) == y_train[idx]).float().mean().item())
        if epoch % 10 == 0 or epoch == EPOCHS - 1:
            print(f"epoch {epoch:3d} loss {loss.item():.4f}", flush=True)
        stopping = sdk.should_stop()
        if stopping or (epoch + 1) % CHECKPOINT_EVERY == 0:
            sdk.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "rng": torch.get_rng_state(), "epoch": epoch, "step": step}, step=step)
        if stopping:
            print(f"asked to stop: saved epoch {epoch} (step {step}); a later attempt resumes here", flush=True)
            return
        if EPOCH_PAUSE_S:
            time.sleep(EPOCH_PAUSE_S)
    elapsed = max(time.perf_counter() - started, 1e-9)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    sdk.log_metrics(step, test_accuracy=accuracy)
    out = Path(os.environ.get("DEEPDOCK_ARTIFACTS_DIR", "artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    torch.save(x_test[:64].clone(), out / "x_test.pt")
    torch.save(y_test[:64].clone(), out / "y_test.pt")
    metrics = {"test_accuracy": accuracy, "train_seconds": elapsed, "samples_per_second": samples / elapsed}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # The whole held-out set as plain JSON: `deepdock demo` sends it to the served model.
    (out / "heldout.json").write_text(json.dumps({"x": x_test.tolist(), "y": y_test.tolist()}))
    sdk.register_model(MODEL_NAME, model, example_input=x_test[:8])
    print(f"weights_sha256={weights_sha256(model)}", flush=True)
    print(f"samples_per_second={samples / elapsed:.1f}", flush=True)
    print(f"test_accuracy={accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
