"""``raydenoise train``: distributed PyTorch training with Ray Train (V2) on ingested Parquet.

Flow: the driver checks everything a user can get wrong (manifest, splits, model name, --init,
--degrade, storage, cluster resources) before any worker starts, chooses the data path, then
runs a ``TorchTrainer``.

Data paths (``plan_data``):
- **memory** (default when the decoded images fit half the memory Ray offers, per worker):
  each worker decodes its share of the train split once, then cuts random patches (crop, flips,
  rotations) from memory in a background thread, so the model gets every CPU the worker holds;
- **stream** (larger data sets, or ``--in-memory no``): Ray Data tasks read and decode shards
  every epoch beside the training and cut several patches from each decoded image.
With ``--degrade SPEC`` only the clean side is used: each patch's noisy input is synthesized on
the worker at every step (fresh noise every step and epoch, reproducible from ``--seed``), and
the val split is degraded once per image with a fixed seed, so val PSNR compares across epochs
and runs.

Each worker trains with DDP, evaluates its share of the val split on full images, and rank 0
reports a checkpoint every epoch. Ray Train keeps the best checkpoint by val loss and the latest
one; re-running with the same storage path and name resumes from the latest, and
``max_failures`` restarts a crashed worker group from it. At the end the driver writes
``RUN/model/`` (best), ``RUN/metrics.csv``, ``RUN/summary.json`` and ``RUN/curves.png``.
"""

from .config import (
    CRASH_ENV,
    MODEL_DEFAULTS,
    PATCHES_PER_IMAGE,
    TrainConfig,
    TrainError,
    init_model_config,
    resolve_config,
)
from .job import below_input_warning, run_train
from .planning import auto_cpus_per_worker

__all__ = [
    "CRASH_ENV",
    "MODEL_DEFAULTS",
    "PATCHES_PER_IMAGE",
    "TrainConfig",
    "TrainError",
    "auto_cpus_per_worker",
    "below_input_warning",
    "init_model_config",
    "resolve_config",
    "run_train",
]
