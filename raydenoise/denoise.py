"""``raydenoise denoise``: Ray Data batch inference over a folder or bucket prefix, with reports.

Pipeline (streaming; the driver holds keys and small report rows, never pixels)::

    from_items(keys) -> read + decode (CPU tasks) -> model (actor pool, GPU when asked)
                     -> encode + write + score (CPU tasks) -> report rows -> driver

Each output goes to ``OUTPUT/<same relative key>`` in the input's format (PNG -> PNG, JPEG ->
JPEG quality 95, ...), grayscale stays grayscale. An input that cannot be read or decoded becomes
an ``error`` row and the job goes on. Existing outputs are skipped (``skipped`` rows) unless
``overwrite``, so re-running an interrupted job resumes it.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import report as rpt
from .artifacts import CONFIG, WEIGHTS, ArtifactError, load_model
from .images import PNG_COMPRESS_LEVEL, ImageError, decode_rgb8, object_column
from .metrics import all_metrics
from .storage import StorageError, Store, cached_store, endpoint_from_env, last_error_line, open_store

REPORT_DIR = "_report"
JPEG_QUALITY = 95
_EMPTY = np.zeros((1, 1, 3), np.uint8)  # placeholder pixels of an error row (same ndim as images)


class DenoiseError(Exception):
    """A user-facing failure of the whole job (bad arguments, model, storage)."""


@dataclass(frozen=True)
class DenoiseConfig:
    input: str
    output: str
    model: str
    reference: str | None = None
    report: str | None = None  # default: OUTPUT/_report
    batch_size: int = 4
    workers: int | None = None  # None: one per CPU (CPU mode) or per GPU share (GPU mode)
    num_gpus_per_worker: float = 0.0
    tile: int | None = None
    overwrite: bool = False
    pipeline: str = "auto"  # "fused" (CPU default), "staged" (GPU default); see FusedActor
    s3_endpoint: str | None = None


def load_model_uri(model_uri: str, endpoint: str | None):
    """(model, config) from a model folder, local or s3:// (downloaded to a temporary folder that
    is removed once the weights are loaded)."""
    store = cached_store(model_uri, endpoint)
    if not store.is_s3:
        return load_model(store.root)
    with tempfile.TemporaryDirectory(prefix="raydenoise-model-") as local:
        for name in (CONFIG, WEIGHTS):
            try:
                data = store.read_bytes(name)
            except FileNotFoundError:
                raise ArtifactError(f"{store.uri(name)} not found (expected a raydenoise model folder)") from None
            with open(os.path.join(local, name), "wb") as f:
                f.write(data)
        return load_model(local)


def _decode_keep_gray(data: bytes) -> tuple[np.ndarray, bool, str]:
    """(RGB uint8 pixels, was the input grayscale, Pillow format name)."""
    from PIL import Image

    rgb = decode_rgb8(data)
    try:
        im = Image.open(io.BytesIO(data))
        gray = im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")
        fmt = im.format or "PNG"
    except Exception:
        gray, fmt = False, "PNG"
    return rgb, gray, fmt


def read_decode(batch: dict[str, np.ndarray], *, input_uri: str, output_uri: str,
                endpoint: str | None) -> dict[str, Any]:
    """Ray Data task: keys -> decoded RGB pixels (or an error). For a ``skip`` row (its output
    exists and will be scored, not redone) the existing output is decoded too."""
    store = cached_store(input_uri, endpoint)
    out_store = cached_store(output_uri, endpoint)
    cols = ("key", "skip", "image", "output", "gray", "format", "error", "seconds")
    out: dict[str, list] = {k: [] for k in cols}
    for key, skip in zip(batch["key"], batch["skip"]):
        t0 = time.perf_counter()
        image, output, gray, fmt, error = _EMPTY, _EMPTY, False, "", ""
        try:
            image, gray, fmt = _decode_keep_gray(store.read_bytes(str(key)))
        except ImageError as exc:
            error = f"not a usable image: {exc}"
        except FileNotFoundError:
            error = "input disappeared before it was read"
        if skip and not error:
            try:
                output = decode_rgb8(out_store.read_bytes(str(key)))
            except (ImageError, FileNotFoundError) as exc:
                error = f"existing output {out_store.uri(str(key))} is unreadable ({exc}); rerun with --overwrite"
        for k, v in zip(cols, (str(key), bool(skip), image, output, gray, fmt, error, time.perf_counter() - t0)):
            out[k].append(v)
    return _pack(out, "image", "output")


def _pack(cols: dict[str, list], *image_cols: str) -> dict[str, Any]:
    return {k: object_column(v) if k in image_cols else np.array(v) for k, v in cols.items()}


class ModelActor:
    """Ray Data actor: loads the model once, denoises batches (grouped by shape, tiled if asked)."""

    def __init__(self, model_uri: str, endpoint: str | None, tile: int | None, use_gpu: bool):
        import torch

        from .inference import Denoiser

        model, config = load_model_uri(model_uri, endpoint)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.denoiser = Denoiser(model, config["model"], device=device, tile=tile)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        todo = [i for i, (e, skip) in enumerate(zip(batch["error"], batch["skip"])) if not e and not skip]
        outputs = list(batch["output"])
        seconds = np.array(batch["seconds"], dtype=np.float64)
        if todo:
            t0 = time.perf_counter()
            results = self.denoiser.run_many([np.asarray(batch["image"][i]) for i in todo])
            share = (time.perf_counter() - t0) / len(todo)
            for i, res in zip(todo, results):
                outputs[i] = res
                seconds[i] += share
        cols = {k: list(batch[k]) for k in ("key", "skip", "gray", "format", "error")}
        cols["seconds"] = list(seconds)
        cols["image"] = list(batch["image"])
        cols["output"] = outputs
        return _pack(cols, "image", "output")


class FusedActor(ModelActor):
    """CPU mode: one actor reads, denoises, writes and scores its batch in one process.

    On CPUs every stage competes for the same cores, so running them as separate Ray Data
    operators buys no overlap but ships each image through the object store twice; N fused
    actors are N independent loops (see BENCHMARKS.md). GPU mode keeps the stages apart so CPU
    decoding and encoding overlap the GPU's work.
    """

    def __init__(self, model_uri: str, endpoint: str | None, tile: int | None, use_gpu: bool,
                 read_kwargs: dict[str, Any], write_kwargs: dict[str, Any]):
        super().__init__(model_uri, endpoint, tile, use_gpu)
        self.read_kwargs, self.write_kwargs = read_kwargs, write_kwargs

    def __call__(self, batch: dict[str, np.ndarray]):
        return write_score(super().__call__(read_decode(batch, **self.read_kwargs)), **self.write_kwargs)


def encode(image: np.ndarray, gray: bool, fmt: str) -> bytes:
    """Encode in the input's format; grayscale inputs are written as one channel."""
    from PIL import Image

    im = Image.fromarray(image)
    if gray:
        im = im.convert("L")
    buf = io.BytesIO()
    fmt = (fmt or "PNG").upper()
    if fmt in ("JPEG", "MPO"):
        im.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    elif fmt == "WEBP":
        im.save(buf, format="WEBP", lossless=True)
    elif fmt == "PNG":
        # Lossless at every level; level 1 encodes ~3x faster than Pillow's default 6.
        im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        try:
            im.save(buf, format=fmt)
        except (KeyError, OSError, ValueError):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    return buf.getvalue()


def write_score(batch: dict[str, np.ndarray], *, output_uri: str, reference_uri: str | None,
                endpoint: str | None):
    """Ray Data task: write each new output, score it (as written; a skipped row's existing
    output as read) and the input against the reference."""
    out_store = cached_store(output_uri, endpoint)
    ref_store = cached_store(reference_uri, endpoint) if reference_uri else None
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(batch["key"]):
        row: dict[str, Any] = {c: None for c in rpt.COLUMNS}
        row.update(key=str(key), error=str(batch["error"][i]) or None, seconds=float(batch["seconds"][i]))
        skip = bool(batch["skip"][i])
        t0 = time.perf_counter()
        if not row["error"]:
            image, output = np.asarray(batch["image"][i]), np.asarray(batch["output"][i])
            row["height"], row["width"] = int(image.shape[0]), int(image.shape[1])
            if not skip:
                data = encode(output, bool(batch["gray"][i]), str(batch["format"][i]))
                out_store.write_bytes(str(key), data)
            if ref_store is not None:
                # Score what was written (JPEG is lossy, grayscale is one channel).
                written = output if skip else decode_rgb8(data)
                row.update(_score(written, image, ref_store, str(key)))
        row["seconds"] += time.perf_counter() - t0
        row["status"] = "error" if row["error"] else "skipped" if skip else "ok"
        rows.append(row)
    return rpt.table(rows)  # typed Arrow columns (nulls where a metric does not apply)


def _score(written: np.ndarray, noisy: np.ndarray, ref_store: Store, key: str) -> dict[str, Any]:
    try:
        ref = decode_rgb8(ref_store.read_bytes(key))
    except FileNotFoundError:
        return {"error": f"no reference at {ref_store.uri(key)}"}
    except ImageError as exc:
        return {"error": f"reference {ref_store.uri(key)} is not a usable image: {exc}"}
    if ref.shape != written.shape:
        return {"error": f"reference {ref_store.uri(key)} is {ref.shape[1]}x{ref.shape[0]}, "
                         f"the image is {written.shape[1]}x{written.shape[0]}"}
    r = ref.astype(np.float32) / 255
    m_out = all_metrics(written.astype(np.float32) / 255, r)
    m_in = all_metrics(noisy.astype(np.float32) / 255, r)
    return {**m_out, **{f"input_{k}": v for k, v in m_in.items()}}


PIPELINES = ("auto", "fused", "staged")


def plan_workers(cfg: DenoiseConfig, cluster: dict[str, float]) -> tuple[bool, int, float]:
    """(staged?, model actors, CPUs per actor).

    GPU actors: by default as many as the GPUs allow, each reserving a token 0.5 CPU.
    Fused CPU actors: by default one per CPU, each reserving 1 CPU (Ray then gives its torch one
    thread); more actors than CPUs share them. Staged CPU actors leave one CPU to the decode and
    encode tasks, which would otherwise wait forever.
    """
    staged = cfg.pipeline == "staged" or (cfg.pipeline == "auto" and cfg.num_gpus_per_worker > 0)
    if cfg.num_gpus_per_worker:
        return staged, cfg.workers or max(1, int(cluster.get("GPU", 0) // cfg.num_gpus_per_worker)), 0.5
    cpus = cluster.get("CPU", 1.0)
    free = cpus - 1.0 if staged else cpus
    workers = cfg.workers or max(1, int(free))
    return staged, workers, max(0.25, min(1.0, math.floor(free / workers * 4) / 4))


def _check_locations(inp: Store, out: Store) -> None:
    a, b = inp.root.rstrip("/") + "/", out.root.rstrip("/") + "/"
    if a == b or b.startswith(a):
        raise DenoiseError(f"--output {out.root} is inside --input {inp.root}: outputs would be read back as inputs")


def run_denoise(cfg: DenoiseConfig, log=print) -> dict[str, Any]:
    """Run the job; returns the summary (also written as summary.json). Raises DenoiseError for
    user-facing failures of the whole job; per-image failures are rows, not exceptions."""
    import ray

    endpoint = endpoint_from_env(cfg.s3_endpoint)
    if cfg.batch_size < 1 or (cfg.workers is not None and cfg.workers < 1) or cfg.num_gpus_per_worker < 0:
        raise DenoiseError("--batch-size and --workers must be at least 1, --num-gpus-per-worker at least 0")
    if cfg.pipeline not in PIPELINES:
        raise DenoiseError(f"--pipeline must be one of {', '.join(PIPELINES)}, not {cfg.pipeline!r}")
    try:
        inp, out = open_store(cfg.input, endpoint), open_store(cfg.output, endpoint)
        _check_locations(inp, out)
        rep = open_store(cfg.report or out.uri(REPORT_DIR), endpoint)
        ref = open_store(cfg.reference, endpoint) if cfg.reference else None
        keys = inp.list_keys()
        out.check_writable()
        rep.check_writable()
        model_uri = open_store(cfg.model, endpoint).root  # resolved: actors may run elsewhere
        load_model_uri(model_uri, endpoint)  # fail fast, before any actor starts
    except (StorageError, ArtifactError) as exc:
        raise DenoiseError(str(exc)) from None
    if not keys:
        raise DenoiseError(f"{inp.root}: no files to denoise")
    cluster = ray.cluster_resources()
    staged, workers, cpus = plan_workers(cfg, cluster)
    if cfg.num_gpus_per_worker and cluster.get("GPU", 0) < cfg.num_gpus_per_worker * workers:
        raise DenoiseError(f"{workers} workers x {cfg.num_gpus_per_worker:g} GPUs: the cluster has "
                           f"{cluster.get('GPU', 0):g}")
    existing = set() if cfg.overwrite else set(out.list_keys())
    todo = [k for k in keys if k not in existing]
    # Skipped rows are only read again when there is a reference to score their outputs against.
    rows: list[dict[str, Any]] = [] if ref else [
        {**{c: None for c in rpt.COLUMNS}, "key": k, "status": "skipped"} for k in keys if k in existing
    ]
    items = [{"key": k, "skip": k in existing} for k in (keys if ref else todo)]
    log(f"denoise: {len(keys)} inputs in {inp.root}; {len(todo)} to do, {len(keys) - len(todo)} already "
        f"done (skipped{', scored again' if ref and existing else ''}); {workers} model actors "
        f"({'GPU, ' if cfg.num_gpus_per_worker else ''}{cpus:g} CPU each, {'staged' if staged else 'fused'})")
    t0 = time.time()
    if items:
        read_kwargs = {"input_uri": inp.root, "output_uri": out.root, "endpoint": endpoint}
        write_kwargs = {"output_uri": out.root, "reference_uri": ref.root if ref else None, "endpoint": endpoint}
        actor_kwargs = {"model_uri": model_uri, "endpoint": endpoint, "tile": cfg.tile,
                        "use_gpu": cfg.num_gpus_per_worker > 0}
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 200))
        pool = ray.data.ActorPoolStrategy(size=workers)
        if staged:
            ds = ds.map_batches(read_decode, batch_size=cfg.batch_size, num_cpus=0.5, fn_kwargs=read_kwargs)
            ds = ds.map_batches(ModelActor, batch_size=cfg.batch_size, num_gpus=cfg.num_gpus_per_worker or None,
                                num_cpus=cpus, compute=pool, fn_constructor_kwargs=actor_kwargs)
            ds = ds.map_batches(write_score, batch_size=cfg.batch_size, num_cpus=0.5, fn_kwargs=write_kwargs)
        else:
            ds = ds.map_batches(FusedActor, batch_size=cfg.batch_size, num_cpus=cpus, compute=pool,
                                fn_constructor_kwargs={**actor_kwargs, "read_kwargs": read_kwargs,
                                                       "write_kwargs": write_kwargs})
        step, next_log, done = max(1, len(items) // 20), 0, 0
        first: tuple[float, int] | None = None  # (seconds to the first result block, its rows)
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                first = first or (time.time() - t0, block.num_rows)
                for row in block.to_pylist():
                    rows.append({c: row.get(c) for c in rpt.COLUMNS})
                    if row["status"] == "error":
                        print(f"denoise: {inp.uri(row['key'])}: {row['error']}", file=sys.stderr)
                done += block.num_rows
                if done >= next_log or done == len(items):
                    next_log = done + step
                    log(f"denoise: {done}/{len(items)} images ({done / max(time.time() - t0, 1e-9):.1f} images/s)")
        except Exception as exc:
            raise DenoiseError(f"the denoising job failed: {last_error_line(exc)}") from exc
    seconds = time.time() - t0
    summary = rpt.summarize(rows, seconds)
    if items and first and seconds > first[0]:
        # Throughput once the actors are up (start-up = actor processes, imports, model load).
        summary["startup_s"] = round(first[0], 3)
        summary["steady_images_per_s"] = (len(items) - first[1]) / (seconds - first[0])
    summary["report"] = rep.root
    _write_report(rows, summary, cfg, inp, out, ref, rep)
    log(f"denoise: {summary['ok']} written, {summary['skipped']} skipped, {summary['failures']} failed "
        f"in {seconds:.1f}s -> {out.root}; report in {rep.root}")
    return summary


def _write_report(rows, summary, cfg, inp: Store, out: Store, ref: Store | None, rep: Store) -> None:
    t = rpt.table(rows)
    rep.write_bytes("report.parquet", rpt.to_parquet(t))
    rep.write_bytes("report.csv", rpt.to_csv(t))
    config = {k: v for k, v in asdict(cfg).items()}
    rep.write_bytes("summary.json", json.dumps({**summary, "config": config}, indent=2).encode())
    scored = sorted((r for r in rows if r["status"] == "ok" and r.get("psnr") is not None),
                    key=lambda r: r["psnr"])
    if scored:
        picks = [("best", r) for r in scored[::-1][:3]] + [("worst", r) for r in scored[:3] if r not in scored[-3:]]
    else:
        picks = [("example", r) for r in rows if r["status"] == "ok"][:3]
    examples = []
    counters: dict[str, int] = {}
    for label, r in picks:
        counters[label] = counters.get(label, 0) + 1
        thumbs = {}
        for name, store in (("input", inp), ("output", out), ("reference", ref)):
            try:
                thumbs[name] = rpt.thumbnail_data_uri(decode_rgb8(store.read_bytes(r["key"]))) if store else ""
            except Exception:
                thumbs[name] = ""
        examples.append({"label": f"{label} {counters[label]}", "row": r, **thumbs})
    page = rpt.render_html(summary, examples, f"raydenoise report: {inp.root}", config)
    rep.write_bytes("report.html", page.encode())
