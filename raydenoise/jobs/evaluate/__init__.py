"""``raydenoise evaluate``: the seed notebook's table on a split of an ingested data set.

For every pair of the split: PSNR, MSE, MAE and SSIM against the clean image of the model's
output and of each ``--baselines`` method (default ``identity,nlm``):
- ``identity``: the noisy input itself;
- ``nlm``: scikit-image Non-Local Means (sigma estimated per image with Immerkaer's method,
  h = 0.8 sigma, 5x5 patches, search distance 6, fast mode);
- ``bm3d``: CBM3D from the ``bm3d`` package (optional: ``pip install bm3d``), sigma estimated per
  image the same way (a data set does not record the true sigma);
- ``gamma``: the classical low-light fix, a per-image gamma curve that brings the mean to 0.45.
Pairs are scored in parallel by Ray Data actors, shard by shard; the driver only receives metric
rows. Outputs are quantized to 8 bits before scoring, exactly as a written file would be.
"""

from .baselines import cbm3d, gamma_curve, nl_means
from .config import BASELINES, DEFAULT_BASELINES, EvaluateConfig, EvaluateError, parse_baselines
from .job import run_evaluate
from .table import format_table

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "EvaluateConfig",
    "EvaluateError",
    "cbm3d",
    "format_table",
    "gamma_curve",
    "nl_means",
    "parse_baselines",
    "run_evaluate",
]
