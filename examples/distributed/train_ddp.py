"""The digits model trained data-parallel with torch DDP over gloo, one process per container.

Every rank computes the gradient of its share of each global batch; DDP averages them, so the weights
after a step are those of one process on the whole batch (up to float summation order): the same seed
and global batch give the same final weights on 1, 2 or 3 hosts (benchmarks and tests compare within
1e-6). Plain SGD keeps that comparison tight. Rank 0 saves a checkpoint every ``CHECKPOINT_EVERY``
epochs; a retried or preempted gang resumes from it on whatever nodes are free. Rank 0 writes the final
weights to ``artifacts/weights.json`` and prints ``weights_sha256=...`` and ``test_accuracy=...``.

Reads its place in the gang from ``sdk.distributed()`` (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT the
platform sets); ``init_process_group("gloo", init_method="env://")`` finds the same values itself.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepdock import sdk

EPOCHS = int(os.environ.get("EPOCHS", "20"))
# Divisible by 1, 2, 3 and 4 ranks, so every rank's share of a batch is the same size.
GLOBAL_BATCH = 96
SEED = 0
LR = 0.2
CHECKPOINT_EVERY = int(os.environ.get("CHECKPOINT_EVERY", "2"))
# Seconds to sleep after each epoch: lets a test break the gang mid-training (0 by default).
EPOCH_PAUSE_S = float(os.environ.get("EPOCH_PAUSE_S", "0"))


def weights(model: torch.nn.Module) -> dict[str, list[float]]:
    return {name: t.detach().flatten().tolist() for name, t in sorted(model.state_dict().items())}


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    gang = sdk.distributed()
    if gang.is_distributed:
        dist.init_process_group("gloo", init_method="env://")
        print(f"rank {gang.rank}/{gang.world_size} joined via {gang.master_addr}:{gang.master_port} "
              f"on {gang.socket_interface or 'the default interface'}", flush=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=SEED, stratify=y)
    x_train, x_test = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_test, dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = torch.nn.parallel.DistributedDataParallel(net) if gang.is_distributed else net
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    if gang.is_leader:
        sdk.log_params(lr=LR, epochs=EPOCHS, global_batch=GLOBAL_BATCH, world_size=gang.world_size, seed=SEED)
    start_epoch, step = 0, 0
    state = sdk.load_checkpoint()
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        print(f"rank {gang.rank} resumed from epoch {state['epoch']} (step {step})", flush=True)
    shuffle = torch.Generator()
    started = time.perf_counter()
    for epoch in range(start_epoch, EPOCHS):
        shuffle.manual_seed(SEED + epoch)  # the same global order on every rank, resumed or not
        order = torch.randperm(len(x_train), generator=shuffle)
        for i in range(0, len(order) - GLOBAL_BATCH + 1, GLOBAL_BATCH):
            mine = order[i : i + GLOBAL_BATCH][gang.rank :: gang.world_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[mine]), y_train[mine])
            loss.backward()
            optimizer.step()
            step += 1
            if gang.is_leader:
                sdk.log_metrics(step, loss=loss.item())
        if gang.is_leader and ((epoch + 1) % CHECKPOINT_EVERY == 0 or epoch == EPOCHS - 1):
            sdk.save_checkpoint({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                 "epoch": epoch, "step": step}, step=step)
        print(f"rank {gang.rank} epoch {epoch} loss {loss.item():.4f}", flush=True)
        if sdk.should_stop():
            print(f"rank {gang.rank}: asked to stop after epoch {epoch}", flush=True)
            return
        time.sleep(EPOCH_PAUSE_S)
    if gang.is_leader:
        with torch.no_grad():
            accuracy = (net(x_test).argmax(dim=1) == y_test).float().mean().item()
        sdk.log_metrics(step, test_accuracy=accuracy, train_seconds=time.perf_counter() - started)
        out = Path(os.environ.get("DEEPDOCK_ARTIFACTS_DIR", "artifacts"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.json").write_text(json.dumps(weights(net)))
        print(f"weights_sha256={weights_sha256(net)}", flush=True)
        print(f"test_accuracy={accuracy:.4f}", flush=True)
    if gang.is_distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
