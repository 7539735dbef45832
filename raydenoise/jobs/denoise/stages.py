"""The Ray stages: the model actors (fused on CPUs, staged read/model/write on GPUs) and how many
run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ledger import report as rpt
from .config import DenoiseConfig
from .image import denoise_states, finish_one, read_one
from .state import _not_attempted, _pack, _short_circuit, _Stores, _this_node, _unpack


def read_decode(batch: dict[str, np.ndarray], **store_kwargs) -> dict[str, Any]:
    """Ray Data task (staged pipeline): keys -> decoded states."""
    st = _Stores(**store_kwargs)
    states, fatal = [], ""
    for w in st.work(batch):
        state = (
            _not_attempted(w["key"], w["skip"], fatal)
            if fatal
            else read_one(w["key"], w["skip"], st, w)
        )
        fatal = fatal or state.fatal
        states.append(state)
    return _pack(states)


@dataclass(frozen=True)
class ModelSpec:
    """How the workers run the model: built once on the driver, handed to every model actor."""

    uri: str  # builtin:NAME, a model folder or an .onnx file (resolved)
    endpoint: str | None
    engine: str  # "torch", "torch-bf16" or "onnxruntime" (engines.choose_engine)
    graph: bytes | None = None  # the ONNX graph for onnxruntime (engines.prepare_graph)
    tile: int | None = None
    strength: float = 1.0
    sigma: float | None = None
    tta: bool = False
    onnx_margin: int | None = None  # a foreign graph's receptive field and size multiple, if given
    onnx_multiple: int | None = None


def model_spec(cfg: DenoiseConfig, model_uri: str, endpoint: str | None) -> ModelSpec:
    """The job's ModelSpec: the engine chosen for the device, the model checked here (torch: its
    weights loaded; ONNX Runtime: the graph read and checked against its contract, or a
    raydenoise model exported and checked against its torch output) so a bad model fails
    before any actor starts."""
    from ...models.artifacts import BUILTIN, load_model_uri
    from ...models.engines import TORCH_ENGINES, choose_engine, prepare_graph

    engine = choose_engine(cfg.engine, model_uri, cfg.num_gpus_per_worker > 0)
    # a built-in's weights are tested; others are loaded here so a bad folder fails first
    if engine in TORCH_ENGINES and not model_uri.startswith(BUILTIN):
        load_model_uri(model_uri, endpoint)
    return ModelSpec(
        model_uri,
        endpoint,
        engine,
        prepare_graph(model_uri, endpoint, engine),
        cfg.tile,
        cfg.strength,
        cfg.sigma,
        cfg.tta,
        cfg.onnx_margin,
        cfg.onnx_multiple,
    )


class ModelActor:
    """Ray Data actor: loads the model once, denoises batches (grouped by shape, tiled when asked
    or when an image would not fit the actor's memory budget)."""

    def __init__(
        self, spec: ModelSpec, use_gpu: bool, cpu_share: float = 1.0, gpu_share: float = 0.0
    ):
        from ...models.engines import make_engine
        from ...models.inference import Denoiser, default_memory_budget

        device, budget = "cpu", default_memory_budget(cpu_share)
        if use_gpu:
            import torch

            if torch.cuda.is_available():
                device = "cuda"
                total = torch.cuda.get_device_properties(0).total_memory
                budget = int(min(8 << 30, 0.4 * total * max(min(gpu_share, 1.0), 0.1)))
        engine = make_engine(
            spec.uri,
            spec.endpoint,
            spec.engine,
            spec.graph,
            device,
            threads=max(1, round(cpu_share)),
            margin=spec.onnx_margin,
            multiple=spec.onnx_multiple,
        )
        self.denoiser = Denoiser(
            engine,
            tile=spec.tile,
            memory_budget=budget,
            strength=spec.strength,
            sigma=spec.sigma,
            tta=spec.tta,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        states = _unpack(batch)
        denoise_states(self.denoiser, states)
        node = _this_node()
        for s in states:
            if s.needs_model():
                s.node = node  # where it was denoised (read and written by CPU tasks)
        return _pack(states)


def write_score(batch: dict[str, np.ndarray], **store_kwargs):
    """Ray Data task (staged pipeline): states -> written outputs -> report rows."""
    st = _Stores(**store_kwargs)
    states = _unpack(batch)
    _short_circuit(states)
    return rpt.table([finish_one(s, st) for s in states])


class FusedActor(ModelActor):
    """CPU mode: one actor reads, denoises, writes and scores its images, one at a time.

    On CPUs every stage competes for the same cores, so running them as separate Ray Data
    operators buys no overlap but ships each image through the object store twice; N fused
    actors are N independent loops (see BENCHMARKS.md). GPU mode keeps the stages apart so CPU
    decoding and encoding overlap the GPU's work. One image at a time bounds an actor's memory
    to one image; large ones also wait for a per-machine slot (LargeImageGate).
    """

    def __init__(
        self,
        spec: ModelSpec,
        use_gpu: bool,
        store_kwargs: dict[str, Any],
        cpu_share: float = 1.0,
        gpu_share: float = 0.0,
    ):
        from ...models.inference import LargeImageGate, image_bytes

        super().__init__(spec, use_gpu, cpu_share, gpu_share)
        self.st = _Stores(**store_kwargs)
        self.gate = LargeImageGate()
        self.image_bytes = image_bytes

    def __call__(self, batch: dict[str, np.ndarray]):
        rows, fatal = [], ""
        for w in self.st.work(batch):
            state = (
                _not_attempted(w["key"], w["skip"], fatal)
                if fatal
                else read_one(w["key"], w["skip"], self.st, w)
            )
            if state.needs_model():
                h, wd = state.height, state.width
                with self.gate.hold(self.image_bytes(h, wd, self.denoiser.pass_bytes(h, wd))):
                    denoise_states(self.denoiser, [state])
                    row = finish_one(state, self.st)
            else:
                row = finish_one(state, self.st)
            fatal = fatal or state.fatal
            rows.append(row)
        return rpt.table(rows)


def plan_workers(cfg: DenoiseConfig, cluster: dict[str, float]) -> tuple[bool, int, float]:
    """(staged?, model actors, CPUs per actor); 0 actors: the cluster has nothing to run them on
    yet (a head that runs no work, as in cluster.yaml, before the autoscaler adds workers): the
    pool then starts at one and grows with the nodes.

    GPU actors: by default as many as the GPUs allow, each reserving a token 0.5 CPU.
    Fused CPU actors: by default one per CPU, each reserving 1 CPU (Ray then gives its torch one
    thread); more actors than CPUs share them. Staged CPU actors leave one CPU to the decode and
    encode tasks, which would otherwise wait forever.
    """
    staged = cfg.pipeline == "staged" or (cfg.pipeline == "auto" and cfg.num_gpus_per_worker > 0)
    if cfg.num_gpus_per_worker:
        if not cfg.workers and cluster.get("GPU", 0) == 0 and cluster.get("CPU", 0) == 0:
            return staged, 0, 0.5  # autoscaling from zero (a head that runs no work, no worker yet)
        return (
            staged,
            cfg.workers or max(1, int(cluster.get("GPU", 0) // cfg.num_gpus_per_worker)),
            0.5,
        )
    if (
        cluster.get("CPU", 0) == 0
    ):  # autoscaling from zero: a pool that grows as nodes join, or --workers
        return staged, cfg.workers or 0, 1.0
    cpus = cluster.get("CPU", 1.0)
    free = cpus - 1.0 if staged else cpus
    workers = cfg.workers or max(1, int(free))
    return staged, workers, max(0.25, min(1.0, math.floor(free / workers * 4) / 4))
