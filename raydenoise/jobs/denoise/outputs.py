"""What a finished run leaves in the report folder besides report.parquet/csv: summary.json and report.html (with before/after comparisons and links to the files)."""

from __future__ import annotations

from dataclasses import asdict

from ...imaging.images import (
    decode_rgb8,
)
from ...ledger import runfiles
from ...ledger.plan import (
    output_key,
)
from ...storage.store import Store


def _write_report(summary, cfg, inp: Store, out: Store, ref: Store | None, rep: Store) -> None:
    """summary.json and report.html (report.parquet and report.csv are written by runfiles.assemble)."""
    from ...ledger import report_page
    from ...storage.jsonfile import to_json
    from ...storage.parts import iter_batches

    config = {k: v for k, v in asdict(cfg).items()}
    rep.write_bytes("summary.json", to_json({**summary, "config": config}))
    comparisons = []
    counters: dict[str, int] = {}
    for label, r in runfiles.examples(rep, n=2):
        counters[label] = counters.get(label, 0) + 1
        images = {}
        for name, store in (("input", inp), ("output", out), ("reference", ref)):
            key = output_key(r["key"], cfg.format) if name == "output" else r["key"]
            try:
                images[name] = (
                    decode_rgb8(store.read_bytes(key), max_pixels=None) if store else None
                )
            except Exception:
                images[name] = None
        comparisons.append(report_page.compare(r["key"], f"{label} {counters[label]}", r, images))
    page_folder = None if rep.is_s3 else rep.root

    def links(key: str) -> tuple[str, str] | None:
        if page_folder is None or inp.is_s3 or out.is_s3:
            return None
        pair = (
            report_page.relative_link(page_folder, inp.key_path(key)),
            report_page.relative_link(page_folder, out.key_path(output_key(key, cfg.format))),
        )
        return pair if all(pair) else None  # type: ignore[return-value]

    facts = {
        "model": cfg.model,
        "engine": summary.get("engine") or cfg.engine,
        "strength": cfg.sigma if cfg.sigma is not None else cfg.strength,
        "strength given as": "a fixed noise level (--sigma)"
        if cfg.sigma is not None
        else "x the estimated level",
        "self-ensemble (--tta)": "yes" if cfg.tta else "no",
        "tile": cfg.tile or "automatic",
        "input": inp.root,
        "output": out.root,
        "reference": ref.root if ref else "none",
        "nodes": len(summary.get("nodes") or {}),
        "run": summary.get("run"),
    }
    page = report_page.denoise_page(
        title=f"raydenoise report: {inp.root}",
        summary=summary,
        facts=facts,
        batches=lambda columns: iter_batches(rep, "report.parquet", columns),
        comparisons=comparisons,
        links=links,
        where={"input": inp.root, "output": out.root},
    )
    rep.write_bytes("report.html", page.encode())
