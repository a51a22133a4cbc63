"""What code inside a deepdock job imports: metrics, params, checkpoints, the stop signal, models.

    from deepdock import sdk
    sdk.log_params(lr=0.01)
    sdk.log_metrics(step, loss=loss)
    if sdk.should_stop():
        sdk.save_checkpoint({"model": model.state_dict(), "step": step}, step=step)
    state = sdk.load_checkpoint()
    sdk.register_model("digits-mlp", model, example_input=x[:8])
    gang = sdk.distributed()        # rank, world size, master address/port, node addresses (typed)

Available in every job container without rebuilding its image: the server copies this folder (standard
library only; torch is used where torch objects are saved) into the job's workdir and puts it on
``PYTHONPATH``. Importing it inside a job installs the SIGTERM handler behind ``should_stop`` (outside a
job, the first ``should_stop()`` call does), so that a process merely importing it keeps its signals; and,
inside a job, starts hashing its read-only mounts for the lineage of its models (sdk/data.py).
"""

from deepdock.sdk.checkpoints import install_stop_handler as _install_stop_handler
from deepdock.sdk.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, should_stop
from deepdock.sdk.context import DistributedContext, JobContext, distributed
from deepdock.sdk.context import current as context
from deepdock.sdk.data import start as _hash_data
from deepdock.sdk.models import register_model
from deepdock.sdk.protocol import TrackingError
from deepdock.sdk.tracking import flush, local_events, log_metric, log_metrics, log_params

__all__ = [
    "DistributedContext", "JobContext", "TrackingError", "context", "distributed", "flush", "latest_checkpoint",
    "load_checkpoint", "local_events", "log_metric", "log_metrics", "log_params", "register_model", "save_checkpoint",
    "should_stop",
]

if context().in_job:
    _install_stop_handler()
    _hash_data()
