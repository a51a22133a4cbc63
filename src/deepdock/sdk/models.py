"""Register a model straight from the job: the files go with the job's artifacts, the server makes the
version when it collects them (with the job's lineage: image, code, data, params, metrics).

``register_model(name, model, example_input=x)`` saves the whole module (``torch.save(model)``, so the
export job can load it without the training script; a class defined in the script run as ``__main__``
cannot be unpickled elsewhere: define it in a module of the job's code), the example input as ``.npy``
and the input/output signature read from the example. Standard library only, torch and numpy when given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from deepdock.sdk import protocol
from deepdock.sdk.context import current
from deepdock.sdk.protocol import TrackingError, check_name
from deepdock.sdk.tracking import emit

MODELS_SUBDIR = "models"
MODEL_FILE = "model.pt"
EXAMPLE_FILE = "example_input.npy"


def register_model(name: str, model: Any, example_input: Any = None, *, files: list[str | Path] | None = None) -> Path:
    """Save ``model`` (a torch module, or a path to a saved model file) for registration as ``name``."""
    check_name(name, "model")
    folder = current().artifacts_dir / MODELS_SUBDIR / name
    if folder.exists():
        raise TrackingError(f"model {name!r} was already registered by this attempt")
    folder.mkdir(parents=True)
    signature: dict[str, Any] | None = None
    if isinstance(model, (str, Path)):
        shutil.copyfile(model, folder / MODEL_FILE)
    else:
        import torch

        model.eval()
        torch.save(model, folder / MODEL_FILE)
        if example_input is not None:
            from deepdock.sdk.signature import outputs_signature, signature_of

            with torch.no_grad():
                output = model(example_input)
            signature = {**signature_of(example_input), "outputs": outputs_signature(output)["outputs"]}
    if example_input is not None:
        from deepdock.sdk.signature import write_npy

        array = example_input.detach().cpu().numpy() if hasattr(example_input, "detach") else example_input
        write_npy(folder / EXAMPLE_FILE, array)
    for extra in files or []:
        shutil.copyfile(extra, folder / Path(extra).name)
    (folder / "model.json").write_text(json.dumps({"name": name, "signature": signature}, indent=2))
    emit({"k": protocol.MODEL, "name": name, "dir": f"{MODELS_SUBDIR}/{name}", "signature": signature})
    return folder
