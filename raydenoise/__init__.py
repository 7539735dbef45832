"""raydenoise: denoise and enhance buckets of noisy or low-light photos at cluster scale.

Python API (see ``raydenoise.api``; importing the package loads neither torch nor Ray)::

    import raydenoise
    model = raydenoise.load_model("builtin:denoise")   # or a model folder, or s3://...
    clean = model(noisy_uint8_image)                   # (H, W, 3) or (H, W) -> same shape, uint8
    raydenoise.denoise(input="photos/", output="clean/")   # a whole folder or bucket, with Ray
"""

from ._version import __version__
from .api import Model, builtin_models, denoise, evaluate, ingest, load_model, synth, train

# The job functions are bound last, so that `raydenoise.denoise` is the function, not the
# submodule of the same name.
from .errors import RaydenoiseError
from .jobs.denoise import DenoiseConfig, DenoiseError
from .jobs.evaluate import EvaluateConfig, EvaluateError
from .jobs.ingest import IngestConfig, IngestError
from .jobs.synth import SynthConfig
from .jobs.train import TrainConfig, TrainError
from .storage.errors import StorageError

__all__ = [
    "ArtifactError",
    "DenoiseConfig",
    "DenoiseError",
    "EvaluateConfig",
    "EvaluateError",
    "IngestConfig",
    "IngestError",
    "Model",
    "RaydenoiseError",
    "StorageError",
    "SynthConfig",
    "TrainConfig",
    "TrainError",
    "__version__",
    "builtin_models",
    "denoise",
    "evaluate",
    "ingest",
    "load_model",
    "synth",
    "train",
]


def __getattr__(name: str):  # PEP 562: ArtifactError lives beside torch code, loaded on first use
    if name == "ArtifactError":
        from .models.artifacts import ArtifactError

        return ArtifactError
    raise AttributeError(f"module 'raydenoise' has no attribute {name!r}")
