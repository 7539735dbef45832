"""The report page of a large run: its size, the time to build it from report.parquet, the
driver's peak memory while building it, and the time headless Chromium takes to open it — for a
small report and a large one, side by side.

    make setup && .venv/bin/python bench/report_page.py                 # 1,000 and 200,000 rows
    .venv/bin/python bench/report_page.py --rows 1000,1000000

Each size: a synthetic report.parquet (rows as denoise writes them: status, size, seconds,
PSNR, noise levels; 1% errors) in a temporary folder, the page built by
``report_page.denoise_page`` reading it back in batches (its peak Python/NumPy heap traced by
tracemalloc; Arrow's buffers are not counted) (four embedded comparisons of 400x600
photos, as a run with a reference has), then opened in Chromium (``performance.timing``:
navigation start to the load event, and to the first table render).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_report(path: Path, n: int) -> None:
    from raydenoise.ledger import report as rpt

    rng = np.random.default_rng(0)
    writer = pq.ParquetWriter(str(path), rpt.SCHEMA)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        status = np.where(rng.random(m) < 0.01, "error", "ok")
        inp = rng.normal(20.5, 1.0, m)
        cols = {c: pa.nulls(m, rpt.SCHEMA.field(c).type) for c in rpt.COLUMNS}
        cols |= {
            "key": pa.array([f"photos/{i:08d}.jpg" for i in range(start, start + m)]),
            "status": pa.array(status),
            "width": pa.array(np.full(m, 600, np.int32)),
            "height": pa.array(np.full(m, 400, np.int32)),
            "seconds": pa.array(rng.gamma(4, 0.1, m)),
            "psnr": pa.array(inp + rng.normal(9, 1.5, m)),
            "input_psnr": pa.array(inp),
            "ssim": pa.array(rng.uniform(0.7, 0.95, m)),
            "input_noise": pa.array(rng.uniform(5, 30, m)),
            "output_noise": pa.array(rng.uniform(0.5, 2, m)),
            "node": pa.array([f"node{i % 3}" for i in range(m)]),
        }
        writer.write_table(pa.table(cols, schema=rpt.SCHEMA))
    writer.close()


def comparisons() -> list:
    from skimage import data

    from raydenoise.ledger import report_page

    rng = np.random.default_rng(1)
    out = []
    for i, photo in enumerate((data.astronaut, data.coffee, data.chelsea, data.rocket)):
        clean = np.ascontiguousarray(photo()[:400, :600])
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        out.append(
            report_page.compare(
                f"photo{i}",
                f"example {i + 1}",
                {"key": f"photo{i}"},
                {"input": noisy, "output": clean, "reference": clean},
            )
        )
    return out


def open_in_chromium(page: Path) -> dict:
    sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "ledger")]
    from test_report_page import _browser

    browser = _browser()
    try:
        t0 = time.perf_counter()
        browser.get(page.as_uri())
        wall = time.perf_counter() - t0
        timing = browser.execute_script(
            "const t = performance.timing; return [t.loadEventEnd - t.navigationStart, "
            "t.domContentLoadedEventEnd - t.navigationStart]"
        )
        rows = browser.execute_script("return window.raydenoiseReport.rows()")
        return {
            "open_s": wall,
            "load_event_ms": timing[0],
            "dom_ready_ms": timing[1],
            "table_rows": rows,
        }
    finally:
        browser.quit()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", default="1000,200000")
    args = ap.parse_args()
    from raydenoise.ledger import report as rpt
    from raydenoise.ledger import report_page
    from raydenoise.storage.parts import iter_batches
    from raydenoise.storage.store import open_store

    cmp = comparisons()
    results = []
    for n in (int(x) for x in args.rows.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="rd-page-"))
        try:
            make_report(tmp / "report.parquet", n)
            store = open_store(str(tmp), None)
            summary = rpt.summarize_batches(
                lambda cols: iter_batches(store, "report.parquet", cols), 1000.0
            )

            def build_page() -> str:
                return report_page.denoise_page(
                    title="bench",
                    summary=summary,
                    facts={"rows": n},
                    batches=lambda cols: iter_batches(store, "report.parquet", cols),
                    comparisons=cmp,
                    links=lambda key: None,
                    where={"input": "in", "output": "out"},
                )

            t0 = time.perf_counter()
            html = build_page()
            build = time.perf_counter() - t0
            tracemalloc.start()  # a second build, traced (tracing slows it several times)
            build_page()
            peak_growth = tracemalloc.get_traced_memory()[1] / 1e6  # Python and NumPy allocations
            tracemalloc.stop()
            page = tmp / "report.html"
            page.write_text(html)
            row = {
                "rows": n,
                "page_mb": page.stat().st_size / 1e6,
                "build_s": build,
                "peak_growth_mb": peak_growth,
                **open_in_chromium(page),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        "\n| report rows | page | rows in the page | build from report.parquet | heap peak while building | "
        "Chromium: load event | table rendered |\n|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['rows']:,} | {r['page_mb']:.2f} MB | {r['table_rows']:,} | {r['build_s']:.1f} s | "
            f"{r['peak_growth_mb']:.0f} MB | {r['load_event_ms']} ms | {r['dom_ready_ms']} ms |"
        )


if __name__ == "__main__":
    main()
