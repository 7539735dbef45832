"""raydenoise: denoise and enhance buckets of noisy or low-light photos at cluster scale.

Python API (see ``raydenoise.api``; importing the package loads neither torch nor Ray)::

    import raydenoise
    model = raydenoise.load_model("builtin:denoise")   # or a model folder, or s3://...
    clean = model(noisy_uint8_image)                   # (H, W, 3) or (H, W) -> same shape, uint8
    raydenoise.denoise(input="photos/", output="clean/")   # a whole folder or bucket, with Ray
"""

__version__ = "0.1.0"

# Imported after __version__ (modules read it). The job functions are bound last, so that
# `raydenoise.denoise` is the function, not the submodule of the same name.
from .api import Model, builtin_models, load_model  # noqa: E402
from .denoise import DenoiseConfig, DenoiseError  # noqa: E402
from .evaluate import EvaluateConfig, EvaluateError  # noqa: E402
from .ingest import IngestConfig, IngestError  # noqa: E402
from .storage import StorageError  # noqa: E402
from .synth import SynthConfig  # noqa: E402
from .train import TrainConfig, TrainError  # noqa: E402
from .api import denoise, evaluate, ingest, synth, train  # noqa: E402,F811

__all__ = ["__version__", "load_model", "Model", "builtin_models", "denoise", "ingest", "train", "evaluate", "synth",
           "DenoiseConfig", "IngestConfig", "TrainConfig", "EvaluateConfig", "SynthConfig", "DenoiseError",
           "IngestError", "TrainError", "EvaluateError", "ArtifactError", "StorageError"]


def __getattr__(name: str):  # PEP 562: ArtifactError lives beside torch code, loaded on first use
    if name == "ArtifactError":
        from .artifacts import ArtifactError

        return ArtifactError
    raise AttributeError(f"module 'raydenoise' has no attribute {name!r}")
