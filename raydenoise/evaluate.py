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

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .console import Progress, console, duration, plural
from .dataset import DatasetError, iter_shard_rows, read_manifest
from .metrics import METRIC_NAMES, all_metrics
from .noise_level import BLIND_SIGMA, strength_problem
from .report import to_json
from .session import StartRay, check_shared_paths, ensure_ray
from .storage import StorageError, endpoint_from_env, last_error_line, object_error, open_store

# --baselines name -> the method's name in the table
BASELINES = {"identity": "noisy input", "nlm": "nl-means", "bm3d": "cbm3d", "gamma": "gamma"}
DEFAULT_BASELINES = ("identity", "nlm")


class EvaluateError(Exception):
    """A user-facing failure: missing data, empty split, bad model."""


@dataclass(frozen=True)
class EvaluateConfig:
    data: str
    model: str
    split: str = "test"
    out: str | None = None  # default: MODEL/eval/<split>
    workers: int | None = None  # None: one per CPU, at most one per shard
    tile: int | None = None
    s3_endpoint: str | None = None
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    dry_run: bool = False  # read the manifest, check the model, time a few pairs; nothing written
    strength: float = (
        1.0  # as denoise --strength: x the estimated noise level (or blend); 0 = the input
    )
    sigma: float | None = (
        None  # as denoise --sigma: a fixed noise level (0-255) for a conditioned model
    )
    engine: str = "auto"  # as denoise --engine: torch, onnxruntime or auto
    tta: bool = False  # as denoise --tta: the mean of 8 flips/rotations


def parse_baselines(text: str) -> tuple[str, ...]:
    """``nlm,bm3d`` -> ("nlm", "bm3d"); ValueError naming the choices for an unknown one."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def check_baselines(names: tuple[str, ...]) -> None:
    """EvaluateError for an unknown baseline, or for bm3d when its package is missing."""
    try:
        parse_baselines(",".join(names))
    except ValueError as exc:
        raise EvaluateError(f"--baselines: {exc}") from None
    if "bm3d" in names:
        try:
            import bm3d  # noqa: F401
        except ImportError:
            raise EvaluateError(
                "--baselines bm3d needs the optional bm3d package (CBM3D): "
                "pip install bm3d (or raydenoise[bm3d]), or leave bm3d out"
            ) from None


def noise_sigma(x: np.ndarray) -> float:
    """The noise level of a float (H, W[, C]) image in [0, 1], on the same scale: the estimate
    raydenoise gives its own conditioned models (``noise_level.estimate_sigma``), so the
    classical baselines get the same information about each image."""
    from .noise_level import estimate_sigma

    return estimate_sigma(x * 255.0) / 255.0


def nl_means(noisy: np.ndarray) -> np.ndarray:
    """scikit-image Non-Local Means on a uint8 RGB image -> uint8 RGB."""
    from skimage.restoration import denoise_nl_means

    x = noisy.astype(np.float32) / 255
    sigma = noise_sigma(x)
    y = denoise_nl_means(
        x,
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1,
    )
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def cbm3d(noisy: np.ndarray) -> np.ndarray:
    """CBM3D (``bm3d`` package) on a uint8 RGB image -> uint8 RGB, sigma estimated per image."""
    import bm3d

    x = noisy.astype(np.float32) / 255
    y = bm3d.bm3d_rgb(x, sigma_psd=max(noise_sigma(x), 1e-3))
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def gamma_curve(low: np.ndarray, target: float = 0.45) -> np.ndarray:
    """x ** g with g chosen per image so the mean becomes ``target`` (uint8 RGB -> uint8 RGB)."""
    x = low.astype(np.float64) / 255
    mean = float(np.clip(x.mean(), 1e-4, 0.9999))
    g = math.log(target) / math.log(mean)
    return np.clip(np.rint(np.power(x, g) * 255), 0, 255).astype(np.uint8)


BASELINE_FNS = {"identity": lambda a: a, "nlm": nl_means, "bm3d": cbm3d, "gamma": gamma_curve}


class Scorer:
    """Ray Data actor: shard paths in, one metric row per (pair, method) out.

    A pair that cannot be decoded or scored, and a shard that cannot be read (damaged, or
    deleted by a re-ingest while this ran), become rows with ``error`` set; the rest go on.
    """

    def __init__(
        self,
        data_uri: str,
        model_uri: str,
        endpoint: str | None,
        tile: int | None,
        baselines: tuple[str, ...] = DEFAULT_BASELINES,
        strength: float = 1.0,
        sigma: float | None = None,
        engine: str = "torch",
        graph: bytes | None = None,
        tta: bool = False,
        threads: int | None = None,
    ):
        from .engines import make_engine
        from .inference import Denoiser

        self.denoiser = Denoiser(
            make_engine(model_uri, endpoint, engine, graph, threads=threads),
            tile=tile,
            strength=strength,
            sigma=sigma,
            tta=tta,
        )
        self.methods = [("model", self.denoiser)] + [
            (BASELINES[b], BASELINE_FNS[b]) for b in baselines
        ]
        self.store = open_store(data_uri, endpoint)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows: dict[str, list] = {k: [] for k in _ROW_KEYS}
        for path in batch["path"]:
            try:
                for shard_rows in iter_shard_rows(self.store, str(path), ("id", "low", "high"), 4):
                    for pid, lb, hb in shard_rows:
                        self._score_pair(str(pid), lb, hb, rows)
            except Exception as exc:
                reason = (
                    "shard not found (was the data set re-ingested while evaluate ran?)"
                    if isinstance(exc, FileNotFoundError)
                    else f"cannot read the shard: {object_error(exc)}"
                )
                _add(rows, id=str(path), method="", error=f"{self.store.uri(str(path))}: {reason}")
        return {
            k: np.array(v, dtype=str if k in ("id", "method", "error") else np.float64)
            for k, v in rows.items()
        }

    def _score_pair(self, pid: str, lb: bytes, hb: bytes, rows: dict[str, list]) -> None:
        from .images import ImageError, decode_rgb8

        try:
            low, high = decode_rgb8(lb, max_pixels=None), decode_rgb8(hb, max_pixels=None)
        except ImageError as exc:
            _add(rows, id=pid, method="", error=f"pair {pid}: not a usable image: {exc}")
            return
        ref = high.astype(np.float32) / 255
        for method, fn in self.methods:
            t0 = time.perf_counter()
            try:
                out = fn(low)
            except Exception as exc:
                _add(rows, id=pid, method=method, error=f"pair {pid}: {method} failed: {exc}")
                continue
            seconds = time.perf_counter() - t0
            _add(
                rows,
                id=pid,
                method=method,
                seconds=seconds,
                **all_metrics(out.astype(np.float32) / 255, ref),
            )


_ROW_KEYS = ("id", "method", "seconds", *METRIC_NAMES, "error")


def _add(rows: dict[str, list], **values: Any) -> None:
    for k in _ROW_KEYS:
        v = values.get(k)
        rows[k].append(
            ("" if v is None else v)
            if k in ("id", "method", "error")
            else (math.nan if v is None else v)
        )


def run_evaluate(
    cfg: EvaluateConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict[str, Any]:
    """Score the split; writes per_image.csv, table.csv and table.json; returns the table.

    Raises EvaluateError for bad arguments, data or model (before any work), and after writing
    the tables when some pairs or shards could not be scored (they are listed in table.json).
    """
    from .artifacts import (
        BUILTIN,
        ArtifactError,
        is_onnx,
        load_model_uri,
        resolve_model_uri,
        takes_level,
    )
    from .engines import EngineError, choose_engine, prepare_graph
    from .images import MIN_TILE

    t_start = time.time()
    if cfg.tile is not None and cfg.tile < MIN_TILE:
        raise EvaluateError(f"--tile must be at least {MIN_TILE} pixels, not {cfg.tile}")
    if cfg.workers is not None and cfg.workers < 1:
        raise EvaluateError("--workers must be at least 1")
    check_baselines(cfg.baselines)
    problem = strength_problem(cfg.strength, cfg.sigma)
    if problem:
        raise EvaluateError(problem)
    methods = ["model"] + [BASELINES[b] for b in cfg.baselines]
    endpoint = endpoint_from_env(cfg.s3_endpoint)
    try:
        manifest = read_manifest(cfg.data, endpoint)
        if manifest.get("clean_only"):
            raise EvaluateError(
                f"{cfg.data} holds clean images only (ingested without --low): evaluate needs pairs; "
                "make noisy partners with `raydenoise synth --clean ... --noise ...` and ingest both"
            )

        # Resolved here: actors may run in another directory or on another node.
        data_uri, model_uri = (
            open_store(cfg.data, endpoint).root,
            resolve_model_uri(cfg.model, endpoint),
        )
        engine = choose_engine(cfg.engine, model_uri, use_gpu=False)
        if engine == "torch":
            load_model_uri(model_uri, endpoint)
        graph = prepare_graph(model_uri, endpoint, engine)  # checked (and exported) once, here
        if cfg.sigma is not None and not takes_level(model_uri, endpoint):
            raise EvaluateError(BLIND_SIGMA.format(model=cfg.model))
        if cfg.out is None and (model_uri.startswith(BUILTIN) or is_onnx(model_uri)):
            raise EvaluateError(
                f"--model {model_uri}: give --out (a built-in model or an ONNX file has no folder to "
                "write eval/ into)"
            )
        out = open_store(
            cfg.out or open_store(model_uri, endpoint).uri(f"eval/{cfg.split}"), endpoint
        )
        if not cfg.dry_run:
            out.check_writable()
    except (DatasetError, StorageError, ArtifactError, EngineError) as exc:
        raise EvaluateError(str(exc)) from None
    shards = [s["path"] for s in manifest.get("shards", []) if s.get("split") == cfg.split]
    if not shards:
        raise EvaluateError(
            f"{cfg.data}: the {cfg.split} split is empty (counts: {manifest.get('counts')})"
        )
    if cfg.dry_run:
        return dry_run(
            cfg,
            manifest,
            shards,
            methods,
            data_uri,
            model_uri,
            endpoint,
            out,
            log,
            t_start,
            (engine, graph),
        )
    check_s = time.time() - t_start
    ray_s = (start_ray or ensure_ray)() or 0.0
    import ray

    not_shared = check_shared_paths(
        reads={"--data": data_uri, "--model": None if model_uri.startswith(BUILTIN) else model_uri},
        writes={},
    )
    if not_shared:
        raise EvaluateError(not_shared)
    first_s = None
    workers = cfg.workers or max(1, min(len(shards), int(ray.cluster_resources().get("CPU", 1))))
    expected = manifest["counts"].get(cfg.split, 0)
    log(
        f"evaluate: {plural(expected, cfg.split + ' pair')} x {plural(len(methods), 'method')} ({', '.join(methods)}), "
        f"{plural(workers, 'actor')}"
    )
    ds = ray.data.from_items(
        [{"path": p} for p in shards], override_num_blocks=len(shards)
    ).map_batches(
        Scorer,
        batch_size=1,
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={
            "data_uri": data_uri,
            "model_uri": model_uri,
            "endpoint": endpoint,
            "tile": cfg.tile,
            "baselines": tuple(cfg.baselines),
            "strength": cfg.strength,
            "sigma": cfg.sigma,
            "engine": engine,
            "graph": graph,
            "tta": cfg.tta,
            "threads": 1,
        },
    )
    sums = {m: _Sums() for m in methods}
    errors: dict[str, None] = {}  # unique messages, in order (at most MAX_ERRORS kept)
    n_errors, ids = 0, _Counter()
    per_image: dict[str, dict[str, float]] = {}  # id -> method -> PSNR, for the report page
    try:
        with (
            out.open_write("per_image.csv") as raw,
            Progress("evaluate", expected * len(methods), unit="score") as progress,
        ):
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, fieldnames=list(PER_IMAGE))
            writer.writeheader()
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for r in _batch_rows(batch):
                    first_s = first_s or time.time() - t_start
                    progress.update(1)
                    if r["error"]:
                        n_errors += 1
                        if len(errors) < MAX_ERRORS:
                            errors.setdefault(r["error"])
                        continue
                    writer.writerow({k: r[k] for k in PER_IMAGE})
                    sums[r["method"]].add(r)
                    per_image.setdefault(r["id"], {})[r["method"]] = min(float(r["psnr"]), 100.0)
                    ids.add(r["id"])
            text.flush()
            text.detach()
    except Exception as exc:
        raise EvaluateError(f"the scoring job failed: {last_error_line(exc)}") from exc
    table = {m: sums[m].table() for m in methods}
    scored = ids.count
    out.write_bytes("table.csv", _csv([{"method": m, **v} for m, v in table.items()]))
    phases = {
        "check_s": round(check_s, 3),
        "ray_init_s": round(ray_s, 3),
        "first_score_s": round(first_s, 3) if first_s else None,
    }
    errors_list = sorted(errors)
    out.write_bytes(
        "table.json",
        to_json(
            {
                "table": table,
                "config": asdict(cfg),
                "data_run": manifest["run"],
                "pairs_expected": expected,
                "errors": errors_list,
                "errors_total": n_errors,
                "phases": phases,
            }
        ),
    )
    _write_page(cfg, table, per_image, out, data_uri, shards, (model_uri, endpoint, engine, graph))
    log(format_table(table, cfg.split))
    log(f"evaluate: wrote {out.uri('table.csv')}, table.json, per_image.csv and report.html")
    if n_errors:
        for e in errors_list[:10]:
            console().error(f"evaluate: {e}")
        raise EvaluateError(
            f"{n_errors} problems (listed above and in {out.uri('table.json')}); the table covers "
            f"{scored} of {expected} pairs"
        )
    return table


def _write_page(
    cfg: EvaluateConfig,
    table: dict,
    per_image: dict[str, dict[str, float]],
    out,
    data_uri: str,
    shards: list[str],
    model: tuple,
) -> None:
    """report.html: the methods side by side per image, and the images where the model gains
    most and least over the best baseline, every method's output at 1:1 (recomputed here)."""
    from . import report_page
    from .engines import make_engine
    from .images import decode_rgb8
    from .inference import Denoiser

    model_uri, endpoint, engine, graph = model
    wanted = dict((i, label) for label, i in report_page.extremes(per_image))
    pairs: dict[str, tuple[bytes, bytes]] = {}
    store = open_store(data_uri, endpoint)
    for shard in shards:
        if len(pairs) == len(wanted):
            break
        try:
            for rows in iter_shard_rows(store, shard, ("id", "low", "high"), 8):
                pairs.update({str(pid): (lb, hb) for pid, lb, hb in rows if str(pid) in wanted})
        except (
            Exception
        ):  # a damaged or vanished shard: already an error of the run; its pairs are not shown
            continue
    denoiser = Denoiser(
        make_engine(model_uri, endpoint, engine, graph),
        tile=cfg.tile,
        strength=cfg.strength,
        sigma=cfg.sigma,
        tta=cfg.tta,
    )
    names = (
        "input",
        "model",
        *[BASELINES[b] for b in cfg.baselines if b != "identity"],
        "reference",
    )
    comparisons = []
    for pid, label in wanted.items():
        if pid not in pairs:
            continue
        try:
            low, high = (decode_rgb8(b, max_pixels=None) for b in pairs[pid])
            images = {"input": low, "model": denoiser(low)}
            images |= {BASELINES[b]: BASELINE_FNS[b](low) for b in cfg.baselines if b != "identity"}
        except (
            Exception
        ):  # it was scored, so this does not happen; if it does, the image is not shown
            continue
        images["reference"] = high
        row = {
            "key": pid,
            "psnr": per_image[pid].get("model"),
            "input_psnr": per_image[pid].get("noisy input"),
            "width": low.shape[1],
            "height": low.shape[0],
        }
        comparisons.append(report_page.compare(pid, label, row, images))
    facts = {
        "model": cfg.model,
        "engine": engine,
        "data": data_uri,
        "split": cfg.split,
        "baselines": ", ".join(BASELINES[b] for b in cfg.baselines) or "none",
        "self-ensemble (--tta)": "yes" if cfg.tta else "no",
        "strength": cfg.sigma if cfg.sigma is not None else cfg.strength,
    }
    page = report_page.evaluate_page(
        title=f"raydenoise evaluate: {cfg.model} on {data_uri} ({cfg.split})",
        table=table,
        per_image=per_image,
        facts=facts,
        comparisons=comparisons,
        crop_names=names,
    )
    out.write_bytes("report.html", page.encode())


PER_IMAGE = ("id", "method", "seconds", *METRIC_NAMES)  # per_image.csv's columns
MAX_ERRORS = 1000  # distinct error messages kept for table.json (all are counted)


def _batch_rows(batch: dict[str, np.ndarray]):
    for i in range(len(batch["id"])):
        yield {
            k: (v.item() if isinstance(v, np.generic) else v)
            for k, v in ((k, batch[k][i]) for k in _ROW_KEYS)
        }


class _Sums:
    """Running means of one method's rows (finite values only, like _mean)."""

    def __init__(self):
        self.images = 0
        self.total = {k: 0.0 for k in (*METRIC_NAMES, "seconds")}
        self.n = dict.fromkeys(self.total, 0)

    def add(self, r: dict[str, Any]) -> None:
        self.images += 1
        for k in self.total:
            v = r.get(k)
            if v is not None and math.isfinite(v):
                self.total[k] += float(v)
                self.n[k] += 1

    def table(self) -> dict[str, Any]:
        return {
            **{k: (self.total[k] / self.n[k] if self.n[k] else None) for k in self.total},
            "images": self.images,
        }


class _Counter:
    """Distinct pair ids scored: rows of one pair come together (one actor scores a pair's methods
    in a row), so counting changes of id is exact without holding the ids."""

    def __init__(self):
        self.count, self._last = 0, None

    def add(self, pid: str) -> None:
        if pid != self._last:
            self.count, self._last = self.count + 1, pid


SAMPLE = 3  # pairs scored on the driver by --dry-run to estimate the time


def dry_run(
    cfg: EvaluateConfig,
    manifest: dict,
    shards: list[str],
    methods: list[str],
    data_uri: str,
    model_uri: str,
    endpoint: str | None,
    out,
    log: Callable[[str], None],
    t_start: float,
    engine_graph: tuple[str, bytes | None] = ("torch", None),
) -> dict[str, Any]:
    """Check and plan only, without Ray and without writing: the pairs and shards of the split,
    the methods, and the time per pair of each method on a few pairs scored here."""
    from .inference import one_thread

    expected = manifest["counts"].get(cfg.split, 0)
    with one_thread():
        scorer = Scorer(
            data_uri,
            model_uri,
            endpoint,
            cfg.tile,
            tuple(cfg.baselines),
            cfg.strength,
            cfg.sigma,
            engine_graph[0],
            engine_graph[1],
            cfg.tta,
            threads=1,
        )
        rows: dict[str, list] = {k: [] for k in _ROW_KEYS}
        sampled = 0
        try:
            for shard_rows in iter_shard_rows(
                scorer.store, shards[0], ("id", "low", "high"), SAMPLE
            ):
                for pid, lb, hb in shard_rows[: SAMPLE - sampled]:
                    scorer._score_pair(str(pid), lb, hb, rows)
                    sampled += 1
                if sampled >= SAMPLE:
                    break
        except Exception as exc:
            raise EvaluateError(
                f"{scorer.store.uri(shards[0])}: cannot read the shard: {object_error(exc)}"
            ) from None
    per_pair = {
        m: _mean(
            [
                s
                for s, mm, e in zip(rows["seconds"], rows["method"], rows["error"])
                if mm == m and not e
            ]
        )
        for m in methods
    }
    cpu_s = sum(v for v in per_pair.values() if v) * expected
    summary = {
        "dry_run": True,
        "split": cfg.split,
        "pairs": expected,
        "shards": len(shards),
        "methods": methods,
        "sampled": sampled,
        "seconds_per_pair": per_pair,
        "cpu_seconds": cpu_s,
        "out": out.root,
        "plan_s": round(time.time() - t_start, 3),
    }
    log(
        f"evaluate --dry-run: {plural(expected, cfg.split + ' pair')} in {plural(len(shards), 'shard')} of {data_uri} "
        f"x {plural(len(methods), 'method')} ({', '.join(methods)}); the tables would go to {out.root}"
    )
    if sampled:
        log(
            "evaluate --dry-run: estimate from "
            + plural(sampled, "pair")
            + " scored here: "
            + ", ".join(f"{m} {v:.3f} s/pair" for m, v in per_pair.items() if v is not None)
            + f"; about {duration(cpu_s)} on one CPU, divided by the CPUs of the cluster that runs it"
        )
    log("evaluate --dry-run: nothing was written")
    return summary


def _mean(values: list[float]) -> float | None:
    """Mean of the finite values; None when there are none (never NaN in a table)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def format_table(table: dict[str, dict[str, float]], split: str) -> str:
    lines = [f"{split} split    PSNR (dB)      MSE      MAE     SSIM   s/image", "-" * 62]

    def f(v, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for method, v in table.items():
        lines.append(
            f"{method:<14} {f(v['psnr'], 9, 2)} {f(v['mse'], 8, 5)} {f(v['mae'], 8, 5)} {f(v['ssim'], 8, 4)} "
            f"{f(v['seconds'], 8, 3)}"
        )
    return "\n".join(lines)
