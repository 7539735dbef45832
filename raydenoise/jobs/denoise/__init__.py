"""``raydenoise denoise``: Ray Data batch inference over a folder or bucket prefix, with reports.

Pipeline (streaming; the driver holds keys and small report rows, never pixels)::

    CPU (fused):  from_items(keys) -> actors: read, decode, denoise, encode, write, score -> rows
    GPU (staged): from_items(keys) -> read + decode (CPU tasks) -> model (GPU actors)
                                   -> encode + write + score (CPU tasks) -> report rows -> driver

Each output goes to ``OUTPUT/<same relative key>`` in the input's format (a lossy input stays
lossy at its own quality, EXIF and ICC profile carried: images.encode_like), grayscale stays
grayscale, alpha is carried through; 16-bit PNG and TIFF are denoised at full precision and
written with 16 bits. Outputs are written atomically (Store.open_write), so a file under its final
name is complete. Anything that goes wrong with one image becomes that image's ``error`` row and
the job goes on; a failure of the storage itself stops the job, writes the report of what was
done (the rest as ``not-done``) and a rerun resumes. An existing output is kept only when an
earlier report row says the same input was made into it by the same model and options, and it is
unchanged or verifies (plan.other_maker, _verify_existing); anything else is redone. One run per
output at a time (runlock).
"""

from .config import DenoiseConfig, DenoiseError, check_config, made_by
from .job import run_denoise
from .stages import model_spec, plan_workers

__all__ = [
    "DenoiseConfig",
    "DenoiseError",
    "check_config",
    "made_by",
    "model_spec",
    "plan_workers",
    "run_denoise",
]
