"""``denoise --dry-run``: list and plan only, with a time estimate from a few inputs."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from ...console import duration, plural
from ...imaging.images import (
    decode_for_denoise,
)
from ...ledger import runfiles
from ...ledger.plan import (
    other_maker,
    trusted,
)
from ...storage.errors import StorageError, object_error
from ...storage.store import Store
from ..outline import DRY_RUN_SAMPLE, Estimate
from .config import DenoiseConfig, DenoiseError
from .planning import _items
from .stages import ModelSpec


def dry_run(
    cfg: DenoiseConfig,
    inp: Store,
    out: Store,
    rep: Store,
    spec: ModelSpec,
    max_pixels: int | None,
    log: Callable[[str], None],
    t_start: float,
    fingerprint: str,
) -> dict[str, Any]:
    """List and plan only, without Ray and without writing anything: how many inputs would be
    done, found done already (their outputs are verified and kept), or left out (by reason), and
    an estimate of the model time from a few inputs denoised here. The listings are merged as
    two sorted streams (raydenoise.ledger.plan): memory does not grow with the number of objects."""
    from collections import Counter

    outputs = None if cfg.overwrite or not _exists(out) else out.iter_entries()
    earlier = () if outputs is None or not _exists(rep) else runfiles.earlier_rows(rep, None)
    counts: Counter = Counter()
    excluded: Counter = Counter()
    examples: dict[str, str] = {}
    todo_bytes, sample = 0, []  # type: tuple[int, list[str]]
    try:
        with _items(cfg, inp, outputs, earlier) as items:
            for item in items:
                counts["inputs"] += 1
                if item.excluded:
                    excluded[item.excluded] += 1
                    examples.setdefault(item.excluded, item.key)
                elif item.existing is not None and other_maker(item, fingerprint):
                    counts["redo"] += 1
                    todo_bytes += item.size
                elif not cfg.reference and trusted(item, fingerprint):
                    counts["trusted"] += 1
                elif item.existing is not None:
                    counts["existing"] += 1
                else:
                    counts["to_do"] += 1
                    todo_bytes += item.size
                    if len(sample) < DRY_RUN_SAMPLE:
                        sample.append(item.key)
    except StorageError as exc:
        raise DenoiseError(str(exc)) from None
    plan_s = time.time() - t_start
    estimate = _estimate(sample, inp, spec, max_pixels, todo_bytes)
    summary = {
        "dry_run": True,
        "inputs": counts["inputs"],
        "to_do": counts["to_do"],
        "redo": counts["redo"],
        "existing": counts["existing"],
        "trusted": counts["trusted"],
        "excluded": dict(excluded),
        "excluded_examples": examples,
        "to_do_bytes": todo_bytes,
        "plan_s": round(plan_s, 3),
        "estimate": estimate,
    }
    _say(counts, excluded, examples, estimate, inp.root, out.root, log)
    log(f"denoise --dry-run: listed and planned in {plan_s:.1f} s; nothing was written")
    return summary


def _say(counts, excluded, examples, estimate: dict, inp_root: str, out_root: str, log) -> None:
    """The dry run's counts and estimate, in words."""
    log(
        f"denoise --dry-run: {plural(counts['inputs'], 'input')} in {inp_root}: {counts['to_do']:,} to do, "
        + (
            f"{counts['redo']:,} to redo (an output of another model or options, of a changed input, or that no "
            "earlier report vouches for), "
            if counts["redo"]
            else ""
        )
        + f"{counts['existing']:,} with an output in {out_root} already (verified, skipped if complete), "
        + (
            f"{counts['trusted']:,} with an output the earlier report vouches for (kept, not read), "
            if counts["trusted"]
            else ""
        )
        + f"{sum(excluded.values()):,} excluded"
        + (
            " ("
            + "; ".join(
                f"{n:,} {why.split(';')[0]}, e.g. {examples[why]}" for why, n in excluded.items()
            )
            + ")"
            if excluded
            else ""
        )
    )
    if estimate.get("cpu_seconds") is not None:
        log(
            f"denoise --dry-run: estimate: {duration(estimate['cpu_seconds'])} of model time on one CPU "
            f"({estimate['sampled']} sampled, {estimate['seconds_per_megapixel']:.2f} s/megapixel, "
            f"{estimate['megapixels_per_mb']:.2f} megapixels per MB of input; rough): about "
            f"{duration(estimate['cpu_seconds'] / max(1, os.cpu_count() or 1))} on this machine's {os.cpu_count()} CPUs, "
            "divided by the CPUs of the cluster that runs it"
        )
    elif estimate.get("note"):
        log(f"denoise --dry-run: no estimate: {estimate['note']}")


def _exists(store: Store) -> bool:
    try:
        return bool(store.fs.exists(store.path))
    except Exception as exc:
        raise DenoiseError(f"{store.root}: cannot list ({object_error(exc)})") from None


def _estimate(
    sample: list[str], inp: Store, spec: ModelSpec, max_pixels: int | None, todo_bytes: int
) -> dict[str, Any]:
    """Seconds of model time on one CPU for the work, from the sample: seconds per megapixel x
    megapixels (estimated from the inputs' bytes, at the sample's megapixels per byte)."""
    if not sample:
        return {"note": "nothing to do"}
    from ...models.engines import TORCH_ENGINES, make_engine
    from ...models.inference import Denoiser, one_thread

    engine = make_engine(
        spec.uri,
        spec.endpoint,
        spec.engine,
        spec.graph,
        threads=1,
        margin=spec.onnx_margin,
        multiple=spec.onnx_multiple,
    )
    denoiser = Denoiser(
        engine, tile=spec.tile, strength=spec.strength, sigma=spec.sigma, tta=spec.tta
    )
    estimate, size = Estimate(), 0  # seconds per megapixel; the sample's bytes
    with one_thread() if spec.engine in TORCH_ENGINES else contextlib.nullcontext():
        for key in sample:
            size += _time_one(key, inp, denoiser, max_pixels, estimate)
    s_per_mp = estimate.per_unit()
    if s_per_mp is None:
        return {"note": "none of the sampled inputs could be decoded"}
    mp_per_mb = estimate.units / (size / 1e6)
    return {
        "sampled": estimate.sampled,
        "seconds_per_megapixel": s_per_mp,
        "megapixels_per_mb": mp_per_mb,
        "cpu_seconds": s_per_mp * mp_per_mb * todo_bytes / 1e6,
        "engine": spec.engine,
    }


def _time_one(key: str, inp: Store, denoiser, max_pixels: int | None, estimate: Estimate) -> int:
    """One sampled input's model time added to ``estimate`` (in megapixels); returns its bytes.
    An input that cannot be read or decoded (it would fail in the job) is no measure: 0."""
    try:
        data = inp.read_bytes(key)
        image = decode_for_denoise(data, max_pixels).rgb
    except Exception:
        return 0
    t0 = time.perf_counter()
    denoiser(image)
    estimate.add(time.perf_counter() - t0, image.shape[0] * image.shape[1] / 1e6)
    return len(data)
