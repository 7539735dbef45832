"""The Python API: the same jobs as the command line, for notebooks and programs.

    import raydenoise
    model = raydenoise.load_model("builtin:denoise")
    clean = model(noisy)                  # uint8 (H, W, 3) or (H, W) -> same shape and dtype

    summary = raydenoise.denoise(input="s3://bucket/noisy/", output="s3://bucket/clean/")

Every job function takes its configuration object (``DenoiseConfig``, ``IngestConfig``,
``TrainConfig``, ``EvaluateConfig``, ``SynthConfig``) or the same fields as keyword arguments,
joins Ray when the job needs it (``address``; default: $RAY_ADDRESS, a cluster started with
``ray start`` on this machine, or a new local one) after checking its arguments, and returns the
summary the command line prints. Failures are exceptions (``DenoiseError``, ``TrainError``, ...,
all subclasses of ``Exception`` with a message naming the file and the reason); nothing here
calls ``sys.exit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import numpy as np

from .jobs.denoise import DenoiseConfig, run_denoise
from .jobs.evaluate import EvaluateConfig, run_evaluate
from .jobs.ingest import IngestConfig, IngestResult, run_ingest
from .jobs.synth import SynthConfig, SynthResult, run_synth
from .jobs.train import TrainConfig, resolve_config, run_train
from .session import ensure_ray

Log = Callable[[str], None]


class Model:
    """A loaded denoising or enhancement model. Call it on images:

    - ``model(image)``: a NumPy ``uint8`` array, (H, W, 3) RGB or (H, W) grayscale, of any size
      -> the restored image, same shape and dtype. Large images are processed in tiles (exact:
      each tile carries the network's receptive-field margin).
    - ``model.many(images)``: a list of such arrays -> a list.
    - ``model.tensor(x)``: a float ``torch.Tensor`` batch, (N, 3, H, W), values in [0, 1]
      -> the same shape, float32 in [0, 1], on the CPU (for composing with your own torch code).

    How hard it denoises (``load_model(..., strength=, sigma=)``): a network conditioned on the
    noise level (``swift-cond``, e.g. ``builtin:denoise``) is given ``sigma`` (0-255) when set,
    else ``strength`` times the level estimated from each image; a blind network's output is
    blended with its input by ``strength``. ``strength=0`` returns every image unchanged.
    ``model.noise_level(image)`` is that estimate (0-255 scale).

    Attributes: ``name`` (the URI it was loaded from), ``network`` (``swift-cond``, ``swift``,
    ``unet``, ``seed-ae``), ``conditioned`` (takes a noise level), ``config`` (its config.json: card, training configuration, metrics),
    ``parameters`` (count), ``module`` (the ``torch.nn.Module``), ``device``.
    """

    def __init__(
        self,
        module,
        config: dict[str, Any],
        name: str,
        device: str = "cpu",
        tile: int | None = None,
        strength: float = 1.0,
        sigma: float | None = None,
        engine: str = "torch",
        graph: bytes | None = None,
        tta: bool = False,
    ):
        from .models.engines import OrtEngine, TorchEngine
        from .models.inference import Denoiser
        from .models.onnx_graph import graph_parameters

        self.name, self.config, self.network, self.engine = name, config, config["model"], engine
        runner: OrtEngine | TorchEngine
        if engine == "onnxruntime":
            assert graph is not None, "an ONNX Runtime model needs its graph"
            runner = OrtEngine(graph, name, device)
        else:
            runner = TorchEngine(
                module, self.network, device, config.get("width"), bf16=engine == "torch-bf16"
            )
        self._denoiser = Denoiser(runner, tile=tile, strength=strength, sigma=sigma, tta=tta)
        self.conditioned = self._denoiser.conditioned
        self.module = module  # the torch network (None for an .onnx graph)
        self.device = self._denoiser.device
        self.parameters = (
            sum(p.numel() for p in module.parameters())
            if module is not None
            else graph_parameters(graph or b"")
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.many([image])[0]

    def many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray):
                raise TypeError(
                    f"image {i}: expected a numpy uint8 array, got {type(img).__name__}"
                )
        return self._denoiser.run_many(list(images))

    @staticmethod
    def noise_level(image: np.ndarray) -> float:
        """The estimated noise level of a uint8 image, as the standard deviation of its noise on
        the 0-255 scale (what a conditioned network is given by default)."""
        from .imaging.noise_level import estimate_sigma

        return estimate_sigma(image)

    def tensor(self, x):
        import torch

        if (
            not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
            or x.ndim != 4
            or x.shape[1] != 3
        ):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a float tensor (N, 3, H, W) in [0, 1], got {got}")
        return self._denoiser.run_tensor(x.float())

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, network={self.network!r}, parameters={self.parameters:,}, "
            f"engine={self.engine!r}, device={str(self.device)!r})"
        )


def load_model(
    uri: str = "builtin:denoise",
    *,
    tile: int | None = None,
    device: str = "cpu",
    s3_endpoint: str | None = None,
    strength: float = 1.0,
    sigma: float | None = None,
    engine: str = "auto",
    tta: bool = False,
) -> Model:
    """Load a model: ``builtin:NAME`` (see :func:`builtin_models`), a model folder
    (``config.json`` + ``model.safetensors``, as ``train`` writes to ``RUN/model``), an
    ``s3://`` prefix holding one, or an ``.onnx`` graph file (any image-to-image graph, see
    ``raydenoise.models.engines``). ``tile``: process images in tiles of this many pixels (default:
    whole images, tiled automatically when one would not fit in memory). ``device``: ``"cpu"``
    or ``"cuda"``. ``engine``: ``"torch"``, ``"torch-bf16"`` (its convolutions in bfloat16: faster on
    most CPUs with bfloat16 units, refused on others), ``"onnxruntime"`` or ``"auto"`` (ONNX Runtime
    on CPUs, torch on GPUs). ``tta``: average the 8 flips/rotations. ``strength``/``sigma``: see
    :class:`Model` (ValueError when out of range, or ``sigma`` for a blind network). Loads
    weights with safetensors only (no pickle). Raises ``ArtifactError`` (``EngineError`` for a
    graph that breaks the contract)."""
    import os

    from .models.artifacts import (
        ArtifactError,
        is_onnx,
        load_model_uri,
        read_onnx,
        resolve_model_uri,
    )
    from .models.engines import choose_engine
    from .models.onnx_graph import check_onnx, export_onnx
    from .storage.store import endpoint_from_env

    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise ArtifactError(
            f"load_model: expected builtin:NAME, a model folder or an s3:// prefix, got {uri!r}"
        )
    endpoint = endpoint_from_env(s3_endpoint)
    resolved = resolve_model_uri(uri, endpoint)
    chosen = choose_engine(engine, resolved, str(device).startswith("cuda"))
    if is_onnx(resolved):
        data = read_onnx(resolved, endpoint)
        spec = check_onnx(data, uri)
        module, config = None, {"model": spec["meta"].get("name", "onnx"), "onnx": spec}
        graph: bytes | None = data
    else:
        module, config = load_model_uri(resolved, endpoint)
        graph = export_onnx(module, config) if chosen == "onnxruntime" else None
    return Model(
        module,
        config,
        uri,
        device=device,
        tile=tile,
        strength=strength,
        sigma=sigma,
        engine=chosen,
        graph=graph,
        tta=tta,
    )


def builtin_models() -> dict[str, dict[str, Any]]:
    """``{"builtin:NAME": card}`` for every model shipped in the package (task, headline score)."""
    import json

    from .models.artifacts import BUILTIN, CONFIG, builtin_dir, builtin_names

    return {
        BUILTIN + n: json.loads((builtin_dir(BUILTIN + n) / CONFIG).read_text()).get("card", {})
        for n in builtin_names()
    }


def _paths(values: dict[str, Any]) -> dict[str, Any]:
    """``pathlib.Path`` (any ``os.PathLike``) values as the strings the configurations hold."""
    import os

    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}


def _config(cls, config, values: dict[str, Any]):
    values = _paths(values)
    if config is not None and values:
        config = replace(config, **values)
    if config is None:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no field {', '.join(unknown)} (fields: {', '.join(sorted(known))})"
            )
        config = cls(**values)
    return config


def _starter(address: str | None):
    return lambda: ensure_ray(address)


def denoise(
    config: DenoiseConfig | None = None,
    /,
    *,
    address: str | None = None,
    log: Log = print,
    **values: Any,
) -> dict[str, Any]:
    """Denoise every image under ``input`` (a folder or ``s3://`` prefix) into ``output`` at the
    same relative keys; returns the summary (counts, seconds, rates, report location) that is
    also written to ``REPORT/summary.json``. Fields: see :class:`DenoiseConfig` (``model``
    defaults to ``builtin:denoise``). Raises ``DenoiseError``."""
    return run_denoise(_config(DenoiseConfig, config, values), log=log, start_ray=_starter(address))


def ingest(
    config: IngestConfig | None = None,
    /,
    *,
    address: str | None = None,
    log: Log = print,
    **values: Any,
) -> IngestResult:
    """Pair ``low``/``high`` images (or take ``high`` alone, clean-only) into Parquet shards and
    a manifest under ``out``; returns ``IngestResult(manifest, out)``. Raises ``IngestError``."""
    return run_ingest(_config(IngestConfig, config, values), log=log, start_ray=_starter(address))


def train(
    config: TrainConfig | None = None,
    /,
    *,
    address: str | None = None,
    log: Log = print,
    model: str | None = None,
    **values: Any,
) -> dict[str, Any]:
    """Train with Ray Train; returns the summary (``run``, ``model_dir``, ``epochs``,
    ``best_epoch``, ``best_metrics``: PSNR in dB, SSIM, losses). Give a ``TrainConfig``, or
    ``model=`` (``swift``, ``unet``, ``seed-ae``) and the other fields as keywords; the model's
    defaults fill what is not given, as on the command line. Raises ``TrainError``."""
    if config is None:
        if model is None and values.get("init"):
            from .jobs.train import init_model_config

            model = init_model_config(values["init"], values.get("s3_endpoint"))["model"]
        if model is None:
            raise TypeError(
                "train(): give a TrainConfig, or model= (swift, unet or seed-ae) or init="
            )
        config = resolve_config(model, **_paths(values))
    elif values or model:
        changes: dict[str, Any] = {**values, **({"model": model} if model else {})}
        config = replace(config, **changes)
    return run_train(config, log=log, start_ray=_starter(address))


def evaluate(
    config: EvaluateConfig | None = None,
    /,
    *,
    address: str | None = None,
    log: Log = print,
    **values: Any,
) -> dict[str, Any]:
    """Score a model against the noisy input and baselines on a split of an ingested data set;
    returns ``{method: {psnr (dB), mse, mae, ssim, seconds (per image), images}}``. Raises
    ``EvaluateError``."""
    return run_evaluate(
        _config(EvaluateConfig, config, values), log=log, start_ray=_starter(address)
    )


def synth(config: SynthConfig | None = None, /, *, log: Log = print, **values: Any) -> SynthResult:
    """Make a paired ``low/`` + ``high/`` data set from clean photos (no Ray needed)."""
    return run_synth(_config(SynthConfig, config, values), log=log)
