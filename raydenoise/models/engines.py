"""The network behind a Denoiser, run by torch or by ONNX Runtime behind one interface. No Ray.

An engine maps a float32 NHWC batch in [0, 1] (and, for a network conditioned on the noise
level, one level per image on the 0-255 scale) to a float32 NHWC batch of the same shape, and
describes the network (``NetInfo``: its receptive-field margin and size multiple for exact
tiling, its memory per pixel). ``Denoiser`` (inference.py) does everything else — tiling,
strength, 8/16-bit conversion, the non-finite check — the same for every engine.

ONNX graphs: raydenoise's own (``raydenoise export``) carry their NetInfo in the model's
metadata (``raydenoise``); any other image-to-image graph is accepted when it has a float NCHW
input of 3 channels in [0, 1] with dynamic height and width, an optional (N,) float ``level``
input, and one output of the input's shape (``check_onnx`` says what is wrong otherwise). Its
margin and size multiple come from the metadata or are given (``--onnx-margin``,
``--onnx-multiple``). Graphs are data: no pickle anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

import numpy as np

from .onnx_graph import EXPORT_VERSION, EngineError, check_onnx, check_session, export_onnx

ENGINES = ("auto", "torch", "torch-bf16", "onnxruntime")
# The engines that run raydenoise's torch networks; torch-bf16: its convolutions in bfloat16.
TORCH_ENGINES = ("torch", "torch-bf16")
# A graph raydenoise did not export: tiles get this much context each side unless told, and
# start on multiples of this many pixels (common U-Nets downsample 8x).
DEFAULT_ONNX_MARGIN, DEFAULT_ONNX_MULTIPLE = 64, 8
ONNX_BYTES_PER_PIXEL = (
    1024  # memory per input pixel assumed for a foreign graph (tiles large images)
)


@dataclass(frozen=True)
class NetInfo:
    """What the Denoiser needs to know of a network."""

    name: str  # raydenoise architecture ("swift-cond", ...) or "onnx" for a foreign graph
    conditioned: bool  # takes a noise level per image
    margin: int  # context (pixels) each side that covers the receptive field: exact tiling
    multiple: int  # tiles start on multiples of this (the network's total downsampling)
    bytes_per_pixel: int  # peak memory of a forward pass per input pixel
    context: int = 0  # > 0: takes the whole image's context, a (N, 3, context, context) thumbnail


def torch_info(model_name: str, width: int | None, conditioned: bool, context: int = 0) -> NetInfo:
    from .networks import NETWORKS

    net = NETWORKS[model_name]
    return NetInfo(
        model_name,
        conditioned,
        net.margin,
        net.stride,
        net.bytes_per_pixel_per_width * (width or net.width),
        context,
    )


class TorchEngine:
    """A torch nn.Module (raydenoise's own networks), in inference mode, channels-last: oneDNN's
    and cuDNN's convolutions are fastest in that layout, and an NHWC array viewed as NCHW
    already is channels-last (no copy on the way in)."""

    kind = "torch"

    def __init__(
        self,
        model,
        model_name: str,
        device: str = "cpu",
        width: int | None = None,
        bf16: bool = False,
    ):
        import torch

        from .architectures import is_conditioned

        self.torch = torch
        self.device = torch.device(device)
        # bfloat16 autocast: convolutions and matrix products in bfloat16, the rest (and every
        # sum) in float32, for 0.01 dB. Up to 1.6x faster per core than float32 where the CPU's
        # bfloat16 units make it so (not on every CPU that has them: BENCHMARKS.md); refused on
        # CPUs without them, where it is emulated.
        if bf16 and self.device.type == "cpu":
            check_bf16_cpu()
        self.bf16 = bf16
        self.kind = "torch-bf16" if bf16 else "torch"
        self.model = model.to(self.device).to(memory_format=torch.channels_last).eval()
        self.info = torch_info(
            model_name, width, is_conditioned(model), getattr(model, "context", 0)
        )

    def run(
        self, x: np.ndarray, levels: np.ndarray | None = None, context: np.ndarray | None = None
    ) -> np.ndarray:
        torch = self.torch
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            t = (
                torch.from_numpy(x)
                .permute(0, 3, 1, 2)
                .to(self.device)
                .contiguous(memory_format=torch.channels_last)
            )
            if self.info.context:
                y = self.model(
                    t, None if context is None else torch.from_numpy(context).to(self.device)
                )
            elif self.info.conditioned:
                lv = torch.as_tensor(
                    np.zeros(x.shape[0], np.float32) if levels is None else levels,
                    dtype=torch.float32,
                    device=self.device,
                )
                y = self.model(t, lv)
            else:
                y = self.model(t)
            return y.float().cpu().permute(0, 2, 3, 1).numpy()


class OrtEngine:
    """An ONNX graph run by ONNX Runtime (CPU provider; CUDA's when asked and installed).

    An exported network reflect-pads its input to its size multiple inside the graph, which
    needs the padding to be smaller than the image; where it is not (tiny images), the torch
    network edge-pads instead, and so is the input here before the graph sees it, then cropped
    back."""

    kind = "onnxruntime"

    def __init__(
        self,
        graph: bytes,
        where: str,
        device: str = "cpu",
        threads: int | None = None,
        margin: int | None = None,
        multiple: int | None = None,
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _cpu_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = (
            3  # warnings about unused initializers etc. are not the user's business
        )
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError(
                    "this ONNX Runtime has no CUDA provider (install onnxruntime-gpu), so it cannot use "
                    "the GPU; run raydenoise's models with --engine torch on GPUs"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(graph, sess_options=opts, providers=providers)
        except Exception as exc:
            raise EngineError(
                f"{where}: ONNX Runtime cannot load this graph ({str(exc).splitlines()[0][:300]})"
            ) from None
        spec = check_session(self.session, where)  # the contract, without importing onnx (0.7 s)
        meta = spec["meta"]
        self.input, self.level_input, self.output = spec["input"], spec["level"], spec["output"]
        self.context_input = spec["context"]
        self.info = NetInfo(
            str(meta.get("name", "onnx")),
            self.level_input is not None,
            int(margin if margin is not None else meta.get("margin", DEFAULT_ONNX_MARGIN)),
            int(multiple if multiple is not None else meta.get("multiple", DEFAULT_ONNX_MULTIPLE)),
            int(meta.get("bytes_per_pixel", ONNX_BYTES_PER_PIXEL)),
            spec["context_size"],
        )
        self.device = device

    def run(
        self, x: np.ndarray, levels: np.ndarray | None = None, context: np.ndarray | None = None
    ) -> np.ndarray:
        n, h, w, _ = x.shape
        m = self.info.multiple
        ph, pw = (-h) % m, (-w) % m
        if (
            ph < h and pw < w
        ):  # the graph reflect-pads to its multiple itself, as the torch network does
            ph = pw = 0
        nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
        if ph or pw:
            nchw = np.pad(nchw, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        feed = {self.input: nchw}
        if self.level_input is not None:
            feed[self.level_input] = (
                np.zeros(n, np.float32) if levels is None else np.asarray(levels, np.float32)
            )
        if self.context_input is not None:
            if context is None:
                from ..imaging.images import area_thumbnail

                context = np.stack([area_thumbnail(img, self.info.context) for img in x])
            feed[self.context_input] = np.ascontiguousarray(context, dtype=np.float32)
        y = self.session.run([self.output], feed)[0]
        if y.shape[:2] != (n, 3) or y.shape[2:] != nchw.shape[2:]:
            raise EngineError(
                f"the graph returned shape {tuple(y.shape)} for an input of {tuple(nchw.shape)}: "
                "an image-to-image graph must return its input's shape"
            )
        return y[:, :, :h, :w].transpose(0, 2, 3, 1)


def choose_engine(engine: str, model_uri: str, use_gpu: bool) -> str:
    """The engine a job runs: ``auto`` is ONNX Runtime on CPUs (1.2-1.5x torch's speed there,
    BENCHMARKS.md) and torch on GPUs; an ONNX graph runs with ONNX Runtime only."""
    from .artifacts import is_onnx

    if engine not in ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if is_onnx(model_uri):
        if engine in TORCH_ENGINES:
            raise EngineError(
                f"{model_uri} is an ONNX graph: it runs with --engine onnxruntime (or auto), not {engine}"
            )
        return "onnxruntime"
    if engine == "auto":
        return "torch" if use_gpu else "onnxruntime"
    if engine == "torch-bf16" and not use_gpu:
        check_bf16_cpu()  # here first, before any worker starts (TorchEngine checks again)
    return engine


def check_bf16_cpu(option: str = "--engine torch-bf16", instead: str = "--engine auto") -> None:
    """EngineError when this CPU would only emulate bfloat16 (slower than float32), naming the
    ``option`` that asked for it and what to use ``instead``."""
    if not fast_bf16_cpu():
        raise EngineError(
            f"{option}: this CPU has no bfloat16 units (AMX or AVX-512 BF16), where bfloat16 is "
            f"emulated and slower than float32; use {instead}"
        )


def fast_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16), as torch sees it.
    Units do not guarantee a gain: a swift network ran 1.6x faster than float32 on an AMD EPYC
    with AVX-512 BF16 and 1.13x slower on an Intel Xeon with AVX-512 BF16 and no AMX
    (BENCHMARKS.md), so bfloat16 stays opt-in. (Timing it once per process was tried: a driver
    and its workers, on differently loaded cores and thread counts, reached different answers.)"""
    try:
        import torch

        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except Exception:  # an older torch without these probes: assume not
        return False


def prepare_graph(model_uri: str, endpoint: str | None, engine: str) -> bytes | None:
    """On the driver, once per job: the ONNX graph the workers run (None for torch): an
    ``.onnx`` file's bytes, checked against the contract (check_onnx), or a raydenoise model
    exported and checked against its torch output (export_onnx)."""
    from .artifacts import is_onnx, load_model_uri, read_onnx

    if engine != "onnxruntime":
        return None
    if is_onnx(model_uri):
        graph = read_onnx(model_uri, endpoint)
        check_onnx(graph, model_uri)
        return graph
    cached = _cache_path(model_uri, endpoint)
    if cached is not None:
        with contextlib.suppress(OSError, ValueError):
            graph = cached.read_bytes()
            if _digest(graph) == cached.with_suffix(".sha256").read_text().strip():
                return graph  # exported and checked against torch when it was written
    model, config = load_model_uri(model_uri, endpoint)
    graph = export_onnx(model, config)
    if cached is not None:
        with contextlib.suppress(OSError):  # the graph first, then the digest that vouches for it
            for path, data in (
                (cached, graph),
                (cached.with_suffix(".sha256"), _digest(graph).encode()),
            ):
                tmp = path.with_name(f".{path.name}.{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, path)
    return graph


def _digest(graph: bytes) -> str:
    import hashlib

    return hashlib.sha256(graph).hexdigest()


def _cache_path(model_uri: str, endpoint: str | None):
    """Where the exported graph of a model is kept between jobs (the export and its check
    against torch cost the driver ~1.5 s and a torch import): keyed by the model's fingerprint
    and the versions that shape the export, in a private folder of this user
    ($RAYDENOISE_CACHE_DIR, else $XDG_CACHE_HOME/raydenoise/onnx, else ~/.cache/...); None
    when there is no usable one. A cached graph is used only when the digest written after it
    (``.sha256`` beside it) matches its bytes: a torn or altered file is exported again."""
    import hashlib
    from pathlib import Path

    from ..console import _private_folder
    from .artifacts import model_fingerprint

    try:
        from importlib.metadata import version

        base = os.environ.get("RAYDENOISE_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "raydenoise",
            "onnx",
        )
        folder = Path(base)
        if _private_folder(folder):
            return None
        key = json.dumps(
            [
                model_fingerprint(model_uri, endpoint),
                version("torch"),
                version("onnx"),  # not an import of onnx: 0.7 s of the first image
                EXPORT_VERSION,
            ]
        )
    except Exception:
        return None
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".onnx")


def make_engine(
    model_uri: str,
    endpoint: str | None,
    engine: str,
    graph: bytes | None,
    device: str = "cpu",
    threads: int | None = None,
    margin: int | None = None,
    multiple: int | None = None,
):
    """In a worker: the engine a Denoiser runs (``graph`` from prepare_graph for ONNX Runtime;
    torch loads the model itself). An ONNX Runtime worker never imports torch."""
    if engine == "onnxruntime":
        if graph is None:
            raise EngineError("ONNX Runtime needs the graph prepare_graph made on the driver")
        return OrtEngine(graph, model_uri, device, threads, margin, multiple)
    from .artifacts import load_model_uri

    model, config = load_model_uri(model_uri, endpoint)
    return TorchEngine(
        model, config["model"], device, config.get("width"), bf16=engine == "torch-bf16"
    )


def _cpu_threads() -> int:
    """Threads for ONNX Runtime: the CPUs this process may use (a Ray actor's share is set by
    OMP_NUM_THREADS, which Ray sets to the actor's CPUs)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
