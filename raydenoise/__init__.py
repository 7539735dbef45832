"""raydenoise: denoise and enhance buckets of noisy or low-light photos at cluster scale.

Python API (see ``raydenoise.api``; importing the package loads neither torch nor Ray)::

    import raydenoise
    model = raydenoise.load_model("builtin:denoise")   # or a model folder, or s3://...
    clean = model(noisy_uint8_image)                   # (H, W, 3) or (H, W) -> same shape, uint8
    raydenoise.denoise(input="photos/", output="clean/")   # a whole folder or bucket, with Ray
"""

from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:  # type checkers and editors see the names as if imported here
    from .api import Model, builtin_models, denoise, evaluate, ingest, load_model, synth, train
    from .errors import RaydenoiseError
    from .jobs.denoise import DenoiseConfig, DenoiseError
    from .jobs.evaluate import EvaluateConfig, EvaluateError
    from .jobs.ingest import IngestConfig, IngestError
    from .jobs.synth import SynthConfig
    from .jobs.train import TrainConfig, TrainError
    from .models.artifacts import ArtifactError
    from .storage.errors import StorageError

# What each public name is, and the module it comes from. Loaded on first use (PEP 562), so that
# importing one part of the package (a Ray worker unpickling a job's stage, the CLI's parser) does
# not import every job and what they import (SciPy, PyArrow, the Ray Data and Train APIs).
_LAZY = {
    "Model": "api",
    "builtin_models": "api",
    "denoise": "api",
    "evaluate": "api",
    "ingest": "api",
    "load_model": "api",
    "synth": "api",
    "train": "api",
    "RaydenoiseError": "errors",
    "DenoiseConfig": "jobs.denoise",
    "DenoiseError": "jobs.denoise",
    "EvaluateConfig": "jobs.evaluate",
    "EvaluateError": "jobs.evaluate",
    "IngestConfig": "jobs.ingest",
    "IngestError": "jobs.ingest",
    "SynthConfig": "jobs.synth",
    "TrainConfig": "jobs.train",
    "TrainError": "jobs.train",
    "StorageError": "storage.errors",
    "ArtifactError": "models.artifacts",  # beside torch code
}

__all__ = [  # the names of _LAZY and the version (tests/test_api.py checks they agree)
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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raydenoise' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
