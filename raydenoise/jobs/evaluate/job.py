"""The evaluate job: checks, the scoring pipeline, then per_image.csv, table.csv/json and
report.html (run_evaluate).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ...console import Progress, console, plural
from ...imaging.noise_level import BLIND_SIGMA, strength_problem
from ...session import StartRay
from ...storage.dataset import DatasetError, iter_shard_rows, read_manifest
from ...storage.errors import StorageError, last_error_line
from ...storage.jsonfile import to_json
from ...storage.store import Store, endpoint_from_env, open_store
from ..outline import Job, Phases, run_job
from .baselines import BASELINE_FNS
from .config import BASELINES, EvaluateConfig, EvaluateError, check_baselines
from .dry_run import dry_run
from .scorer import MAX_ERRORS, PER_IMAGE, Scorer, _batch_rows, _Counter, _Sums
from .table import _csv, format_table


def run_evaluate(
    cfg: EvaluateConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict[str, Any]:
    """Score the split; writes per_image.csv, table.csv and table.json; returns the table.

    Raises EvaluateError for bad arguments, data or model (before any work), and after writing
    the tables when some pairs or shards could not be scored (they are listed in table.json).
    """
    return run_job(_Evaluate(cfg, log), cfg.dry_run, start_ray)


class _Evaluate(Job[dict[str, Any]]):
    """An evaluate run in the job outline: check the arguments, data set, model and output;
    then the scoring pipeline on Ray, the tables and the page."""

    error = EvaluateError

    def __init__(self, cfg: EvaluateConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.methods = ["model"] + [BASELINES[b] for b in cfg.baselines]

    def check(self) -> None:
        _check_args(self.cfg)
        self.setup = _open(self.cfg)

    def dry_run(self, phases: Phases) -> dict[str, Any]:
        setup = self.setup
        return dry_run(
            self.cfg,
            setup.manifest,
            setup.shards,
            self.methods,
            setup.data_uri,
            setup.model_uri,
            setup.endpoint,
            setup.out,
            self.log,
            phases.t_start,
            (setup.engine, setup.graph),
        )

    def shared_paths(self):
        from ...models.artifacts import BUILTIN

        uri = self.setup.model_uri
        return {
            "--data": self.setup.data_uri,
            "--model": None if uri.startswith(BUILTIN) else uri,
        }, {}

    def work(self, phases: Phases) -> dict[str, Any]:
        cfg, setup, methods = self.cfg, self.setup, self.methods
        ds, expected = _pipeline(cfg, setup, methods, self.log)
        scores = _Scores(methods)
        scores.collect(ds, setup.out, expected, phases.t_start)
        table = {m: scores.sums[m].table() for m in methods}
        setup.out.write_bytes("table.csv", _csv([{"method": m, **v} for m, v in table.items()]))
        errors_list = sorted(scores.errors)
        setup.out.write_bytes(
            "table.json",
            to_json(
                {
                    "table": table,
                    "config": asdict(cfg),
                    "data_run": setup.manifest["run"],
                    "pairs_expected": expected,
                    "errors": errors_list,
                    "errors_total": scores.n_errors,
                    "phases": phases.record("first_score_s", scores.first_s),
                }
            ),
        )
        _write_page(
            cfg,
            table,
            scores.per_image,
            setup.out,
            setup.data_uri,
            setup.shards,
            (setup.model_uri, setup.endpoint, setup.engine, setup.graph),
        )
        self.log(format_table(table, cfg.split))
        self.log(
            f"evaluate: wrote {setup.out.uri('table.csv')}, table.json, per_image.csv and report.html"
        )
        if scores.n_errors:
            for e in errors_list[:10]:
                console().error(f"evaluate: {e}")
            raise EvaluateError(
                f"{scores.n_errors} problems (listed above and in {setup.out.uri('table.json')}); the "
                f"table covers {scores.ids.count} of {expected} pairs"
            )
        return table


def _check_args(cfg: EvaluateConfig) -> None:
    """Numbers and choices in range; EvaluateError says which is not."""
    from ...imaging.images import MIN_TILE

    if cfg.tile is not None and cfg.tile < MIN_TILE:
        raise EvaluateError(f"--tile must be at least {MIN_TILE} pixels, not {cfg.tile}")
    if cfg.workers is not None and cfg.workers < 1:
        raise EvaluateError("--workers must be at least 1")
    check_baselines(cfg.baselines)
    problem = strength_problem(cfg.strength, cfg.sigma)
    if problem:
        raise EvaluateError(problem)


@dataclass
class _Setup:
    """What a checked evaluate run works with."""

    endpoint: str | None
    manifest: dict
    shards: list[str]  # the split's shard paths
    data_uri: str  # resolved: actors may run in another directory or on another node
    model_uri: str
    engine: str
    graph: Any  # the checked (or exported) ONNX graph for onnxruntime, else None
    out: Store


def _open(cfg: EvaluateConfig) -> _Setup:
    """The data set, the model (loaded or its graph checked, once, here) and the output folder,
    checked before Ray starts; EvaluateError says what is wrong."""
    from ...models.artifacts import (
        BUILTIN,
        ArtifactError,
        is_onnx,
        load_model_uri,
        resolve_model_uri,
        takes_level,
    )
    from ...models.engines import TORCH_ENGINES, EngineError, choose_engine, prepare_graph

    endpoint = endpoint_from_env(cfg.s3_endpoint)
    try:
        manifest = read_manifest(cfg.data, endpoint)
        if manifest.get("clean_only"):
            raise EvaluateError(
                f"{cfg.data} holds clean images only (ingested without --low): evaluate needs pairs; "
                "make noisy partners with `raydenoise synth --clean ... --noise ...` and ingest both"
            )
        data_uri = open_store(cfg.data, endpoint).root
        model_uri = resolve_model_uri(cfg.model, endpoint)
        engine = choose_engine(cfg.engine, model_uri, use_gpu=False)
        if engine in TORCH_ENGINES:
            load_model_uri(model_uri, endpoint)
        graph = prepare_graph(model_uri, endpoint, engine)
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
    return _Setup(endpoint, manifest, shards, data_uri, model_uri, engine, graph, out)


def _pipeline(cfg: EvaluateConfig, setup: _Setup, methods: list[str], log) -> tuple[Any, int]:
    """The scoring dataset (one Scorer actor per CPU, a shard per block) and the pairs expected."""
    import ray

    model_uri = setup.model_uri
    shards = setup.shards
    workers = cfg.workers or max(1, min(len(shards), int(ray.cluster_resources().get("CPU", 1))))
    expected = setup.manifest["counts"].get(cfg.split, 0)
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
            "data_uri": setup.data_uri,
            "model_uri": model_uri,
            "endpoint": setup.endpoint,
            "tile": cfg.tile,
            "baselines": tuple(cfg.baselines),
            "strength": cfg.strength,
            "sigma": cfg.sigma,
            "engine": setup.engine,
            "graph": setup.graph,
            "tta": cfg.tta,
            "threads": 1,
        },
    )
    return ds, expected


class _Scores:
    """The score rows as they come back: per_image.csv written as a stream, sums per method,
    the first errors (unique, at most MAX_ERRORS) and each image's PSNR per method (for the page)."""

    def __init__(self, methods: list[str]):
        self.sums = {m: _Sums() for m in methods}
        self.errors: dict[str, None] = {}
        self.n_errors, self.ids = 0, _Counter()
        self.per_image: dict[str, dict[str, float]] = {}
        self.first_s: float | None = None

    def collect(self, ds, out: Store, expected: int, t_start: float) -> None:
        try:
            with (
                out.open_write("per_image.csv") as raw,
                Progress("evaluate", expected * len(self.sums), unit="score") as progress,
            ):
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                writer = csv.DictWriter(text, fieldnames=list(PER_IMAGE))
                writer.writeheader()
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for r in _batch_rows(batch):
                        self.first_s = self.first_s or time.time() - t_start
                        progress.update(1)
                        if r["error"]:
                            self.n_errors += 1
                            if len(self.errors) < MAX_ERRORS:
                                self.errors.setdefault(r["error"])
                            continue
                        writer.writerow({k: r[k] for k in PER_IMAGE})
                        self.sums[r["method"]].add(r)
                        psnr = min(float(r["psnr"]), 100.0)
                        self.per_image.setdefault(r["id"], {})[r["method"]] = psnr
                        self.ids.add(r["id"])
                text.flush()
                text.detach()
        except Exception as exc:
            raise EvaluateError(f"the scoring job failed: {last_error_line(exc)}") from exc


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
    from ...imaging.images import decode_rgb8
    from ...ledger import report_page
    from ...models.engines import make_engine
    from ...models.inference import Denoiser

    model_uri, endpoint, engine, graph = model
    wanted = dict((i, label) for label, i in report_page.extremes(per_image))
    pairs = _read_pairs(open_store(data_uri, endpoint), shards, set(wanted))
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


def _read_pairs(
    store: Store, shards: list[str], wanted: set[str]
) -> dict[str, tuple[bytes, bytes]]:
    """The (low, high) bytes of the wanted pair ids, reading shards until all are found."""
    pairs: dict[str, tuple[bytes, bytes]] = {}
    for shard in shards:
        if len(pairs) == len(wanted):
            break
        try:
            for rows in iter_shard_rows(store, shard, ("id", "low", "high"), 8):
                pairs.update({str(pid): (lb, hb) for pid, lb, hb in rows if str(pid) in wanted})
        except Exception:  # a damaged or vanished shard: already an error of the run; not shown
            continue
    return pairs
