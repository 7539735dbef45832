"""The report page (``report.html``) of a denoise or evaluate run: one self-contained HTML file
a person looks at. No Ray.

What it holds, all inline (no network, no CDN; it works as a downloaded file):
- the summary in words and the run's model, engine and options;
- plots as inline SVG: the distribution of the PSNR gain (with a reference) or of the input and
  output noise levels (without), time per image (histogram, and against image size), images
  per node — computed in streaming passes over the report, whatever its size;
- every row in a sortable, filterable, paged table (up to ``TABLE_ROWS``: beyond that the rows
  that matter most — failures, the best and worst — and ``report.csv``/``report.parquet`` for
  the rest), each row opening its comparison;
- for a few images (``Comparison``): a before/after slider over the whole image at screen size
  and 1:1 crops of input, output (and reference) of the same regions: where the output differs
  most from the input, and the finest texture. Other rows open the files themselves in the
  same slider when they are reachable by a relative path (a local run).

Every name is HTML-escaped; the table's data is JSON inside a ``<script type=application/json>``
with ``<`` escaped, so no file name can end the script.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .console import duration, plural

TABLE_ROWS = (
    2000  # rows embedded in the page's table; the full report is report.csv / report.parquet
)
CROP = 128  # side of a 1:1 crop, pixels
SCREEN = 960  # the slider's images are at most this wide or tall
BINS = 30


# ----------------------------------------------------------------------------- image pieces


def data_uri(image: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> str:
    """uint8 (H, W, 3) or (H, W) as a base64 data: URI (JPEG at ``quality`` without chroma
    subsampling, or PNG)."""
    buf = io.BytesIO()
    im = Image.fromarray(image)
    if fmt == "JPEG":
        im.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    else:
        im.save(buf, format="PNG")
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def screen_size(image: np.ndarray, side: int = SCREEN) -> np.ndarray:
    """``image`` shrunk (never enlarged) to fit ``side`` x ``side``."""
    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def _window_sums(score: np.ndarray, crop: int) -> np.ndarray:
    """Sum of ``score`` over every crop x crop window (an integral image); [i, j] = the window
    whose top-left corner is (i, j)."""
    c = np.zeros((score.shape[0] + 1, score.shape[1] + 1))
    c[1:, 1:] = score.cumsum(0).cumsum(1)
    return c[crop:, crop:] - c[:-crop, crop:] - c[crop:, :-crop] + c[:-crop, :-crop]


def regions(
    before: np.ndarray, after: np.ndarray, detail: np.ndarray, crop: int = CROP
) -> list[tuple[str, int, int]]:
    """Top-left corners of the two crops shown 1:1: ("most changed", where ``after`` differs
    most from ``before``) and ("finest texture", where ``detail`` — the reference, else the
    output — has the most gradient energy, away from the first)."""
    h, w = before.shape[:2]
    crop = min(crop, h, w)
    if crop == 0:
        return []

    def gray(a):
        return a.astype(np.float32).mean(axis=2) if a.ndim == 3 else a.astype(np.float32)

    change = np.abs(gray(after) - gray(before))
    d = gray(detail)
    energy = np.zeros_like(d)
    energy[:, 1:] += np.abs(np.diff(d, axis=1))
    energy[1:, :] += np.abs(np.diff(d, axis=0))
    found = []
    changed = _window_sums(change, crop)
    y, x = np.unravel_index(int(np.argmax(changed)), changed.shape)
    found.append(("most changed", int(y), int(x)))
    texture = _window_sums(energy, crop)
    ys, xs = np.ogrid[: texture.shape[0], : texture.shape[1]]
    texture[
        (np.abs(ys - y) < crop // 2) & (np.abs(xs - x) < crop // 2)
    ] = -1  # not the same place twice
    ty, tx = np.unravel_index(int(np.argmax(texture)), texture.shape)
    if texture[ty, tx] >= 0:
        found.append(("finest texture", int(ty), int(tx)))
    return found


@dataclass
class Comparison:
    """One image's before/after material for the page: slider images (screen size, JPEG 70: the 1:1 crops carry the detail) and
    1:1 crops of input, output and reference (JPEG 95 without chroma subsampling: noise and
    texture as written, at a third of a PNG's size, so a page of several images stays ~1 MB)."""

    key: str
    label: str
    row: dict[str, Any]
    slider: dict[str, str] = field(default_factory=dict)  # "before"/"after" -> data URI
    crops: list[dict[str, Any]] = field(
        default_factory=list
    )  # {"region", "y", "x", "size", name -> data URI}


def compare(
    key: str, label: str, row: dict[str, Any], images: Mapping[str, np.ndarray | None]
) -> Comparison:
    """The comparison of one image from its decoded ``images``: "input", "output" and optionally
    "reference" (uint8; same size), or any methods' outputs beside "input" (evaluate: the
    slider shows "model" when there is no "output")."""
    c = Comparison(key, label, row)
    before, after = images.get("input"), images.get("output", images.get("model"))
    if before is None or after is None or before.shape[:2] != after.shape[:2]:
        return c
    ref = images.get("reference")
    c.slider = {
        "before": data_uri(screen_size(before), quality=70),
        "after": data_uri(screen_size(after), quality=70),
    }
    detail = ref if ref is not None and ref.shape[:2] == before.shape[:2] else after
    for region, y, x in regions(before, after, detail):
        s = min(CROP, before.shape[0], before.shape[1])
        crop = {"region": region, "y": y, "x": x, "size": s}
        for name, img in images.items():
            if img is not None and img.shape[:2] == before.shape[:2]:
                crop[name] = data_uri(np.ascontiguousarray(img[y : y + s, x : x + s]), quality=95)
        c.crops.append(crop)
    return c


# ----------------------------------------------------------------------------- plots (SVG)


def histogram(
    values: Callable[[], Iterator[np.ndarray]], bins: int = BINS
) -> tuple[np.ndarray, np.ndarray] | None:
    """(counts, edges) of the finite values ``values()`` yields, in two streaming passes (range,
    then counts): memory does not grow with the number of values. None when there are none."""
    lo, hi = math.inf, -math.inf
    for v in values():
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if lo > hi:
        return None
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins, np.int64)
    for v in values():
        counts += np.histogram(v[np.isfinite(v)], edges)[0]
    return counts, edges


def _nice(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def svg_histogram(
    title: str,
    xlabel: str,
    series: list[tuple[str, np.ndarray, np.ndarray]],
    width: int = 440,
    height: int = 220,
) -> str:
    """Bar histograms (``series``: (name, counts, edges), drawn over each other, half
    transparent) as an inline SVG with axes and a legend."""
    series = [s for s in series if s[1].sum() > 0]
    if not series:
        return ""
    left, bottom, top, right = 46, 36, 26, 12
    pw, ph = width - left - right, height - top - bottom
    lo = min(float(e[0]) for _, _, e in series)
    hi = max(float(e[-1]) for _, _, e in series)
    peak = max(int(c.max()) for _, c, _ in series)
    colors = ("#3266cc", "#e0762a", "#2a9d5c")

    def sx(v):
        return left + (v - lo) / (hi - lo or 1) * pw

    parts = [
        f"<svg class='plot' role='img' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><title>{html.escape(title)}</title>",
        f"<text x='{left}' y='16' class='pt'>{html.escape(title)}</text>",
    ]
    for k, (name, counts, edges) in enumerate(series):
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                bh = c / peak * ph
                parts.append(
                    f"<rect x='{sx(a):.1f}' y='{top + ph - bh:.1f}' width='{max(sx(b) - sx(a) - 1, 1):.1f}' "
                    f"height='{bh:.1f}' fill='{colors[k % 3]}' fill-opacity='0.6'><title>{html.escape(name)}: "
                    f"{c} in [{_nice(a)}, {_nice(b)})</title></rect>"
                )
        if len(series) > 1:
            parts.append(
                f"<rect x='{width - 130}' y='{6 + 14 * k}' width='10' height='10' fill='{colors[k % 3]}'/>"
                f"<text x='{width - 116}' y='{15 + 14 * k}' class='pl'>{html.escape(name)}</text>"
            )
    parts += [
        f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#555'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#555'/>",
        f"<text x='{left}' y='{height - 6}' class='pl'>{_nice(lo)}</text>",
        f"<text x='{left + pw}' y='{height - 6}' class='pl' text-anchor='end'>{_nice(hi)}</text>",
        f"<text x='{left + pw / 2}' y='{height - 6}' class='pl' text-anchor='middle'>{html.escape(xlabel)}</text>",
        f"<text x='{left - 4}' y='{top + 8}' class='pl' text-anchor='end'>{peak}</text>",
        f"<text x='{left - 4}' y='{top + ph}' class='pl' text-anchor='end'>0</text>",
        "</svg>",
    ]
    return "".join(parts)


def svg_scatter(
    title: str,
    xlabel: str,
    ylabel: str,
    xs: np.ndarray,
    ys: np.ndarray,
    width: int = 440,
    height: int = 220,
) -> str:
    """Points (``xs``, ``ys``) as an inline SVG with axes."""
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if not xs.size:
        return ""
    left, bottom, top, right = 46, 36, 26, 12
    pw, ph = width - left - right, height - top - bottom
    x0, x1, y1 = 0.0, float(xs.max()) or 1.0, float(ys.max()) or 1.0
    pts = "".join(
        f"<circle cx='{left + (x - x0) / (x1 - x0 or 1) * pw:.1f}' cy='{top + ph - y / y1 * ph:.1f}' r='2.5' "
        "fill='#3266cc' fill-opacity='0.6'/>"
        for x, y in zip(xs, ys)
    )
    return (
        f"<svg class='plot' role='img' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><title>{html.escape(title)}</title>"
        f"<text x='{left}' y='16' class='pt'>{html.escape(title)}</text>{pts}"
        f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#555'/>"
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#555'/>"
        f"<text x='{left}' y='{height - 6}' class='pl'>0</text>"
        f"<text x='{left + pw}' y='{height - 6}' class='pl' text-anchor='end'>{_nice(x1)}</text>"
        f"<text x='{left + pw / 2}' y='{height - 6}' class='pl' text-anchor='middle'>{html.escape(xlabel)}</text>"
        f"<text x='{left - 4}' y='{top + 8}' class='pl' text-anchor='end'>{_nice(y1)}</text>"
        f"<text x='{left + 4}' y='{top + 8}' class='pl'>{html.escape(ylabel)}</text></svg>"
    )


def svg_bars(title: str, counts: dict[str, int], width: int = 440) -> str:
    """Horizontal bars, one per label (images per node)."""
    if not counts:
        return ""
    peak = max(counts.values()) or 1
    height = 30 + 22 * len(counts)
    rows = []
    for i, (name, n) in enumerate(counts.items()):
        y = 26 + 22 * i
        rows.append(
            f"<text x='4' y='{y + 12}' class='pl'>{html.escape(name[:14])}</text>"
            f"<rect x='120' y='{y}' width='{max(1, n / peak * (width - 180)):.1f}' height='16' fill='#3266cc'>"
            f"<title>{html.escape(name)}: {n}</title></rect>"
            f"<text x='{124 + n / peak * (width - 180):.1f}' y='{y + 12}' class='pl'>{n}</text>"
        )
    return (
        f"<svg class='plot' role='img' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><title>{html.escape(title)}</title>"
        f"<text x='4' y='16' class='pt'>{html.escape(title)}</text>{''.join(rows)}</svg>"
    )


# ----------------------------------------------------------------------------- the table


def select_rows(
    rows: Callable[[], Iterable[dict[str, Any]]],
    rank: Callable[[dict[str, Any]], float | None],
    limit: int = TABLE_ROWS,
) -> tuple[list[dict[str, Any]], int]:
    """(the rows the page's table holds, how many rows there are). All of them up to ``limit``;
    beyond, every failure (up to a quarter of the limit) and the rows ranked lowest and highest
    by ``rank`` (None: unranked), found in one streaming pass with bounded heaps."""
    import heapq
    import itertools

    total, kept = 0, []  # type: tuple[int, list[dict[str, Any]]]
    for r in rows():
        total += 1
        if len(kept) <= limit:
            kept.append(r)
    if total <= limit:
        return kept, total
    failed: list[dict[str, Any]] = []
    low: list[tuple[float, int, dict[str, Any]]] = []
    high: list[tuple[float, int, dict[str, Any]]] = []
    counter = itertools.count()
    side = (limit - min(limit // 4, total)) // 2
    for r in rows():
        if r.get("status") not in ("ok", "skipped"):
            if len(failed) < limit // 4:
                failed.append(r)
            continue
        v = rank(r)
        if v is None or not math.isfinite(v):
            continue
        n = next(counter)
        (heapq.heappush if len(high) < side else heapq.heappushpop)(high, (v, n, r))
        (heapq.heappush if len(low) < side else heapq.heappushpop)(low, (-v, n, r))
    chosen = {id(r): r for _, _, r in low} | {id(r): r for _, _, r in high}
    return failed + sorted(chosen.values(), key=lambda r: r["key"]), total


# ----------------------------------------------------------------------------- the page

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.4em;word-break:break-all}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:.9em}
td:first-child,th:first-child{text-align:left}.summary{font-size:1.1em}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #ddd;background:#fff}
.pt{font:bold 12px sans-serif}.pl{font:11px sans-serif;fill:#333}
#rows th{cursor:pointer;background:#f4f4f4;user-select:none}#rows th.sorted::after{content:attr(data-dir)}
#rows tr.err td{background:#fdecec}#rows td.key{max-width:380px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.controls{margin:.5em 0;display:flex;gap:.6em;align-items:center;flex-wrap:wrap}
.cmp{border:1px solid #ccc;padding:.6em;margin:.8em 0;border-radius:4px}.cmp.open{outline:3px solid #3266cc}
.slider{position:relative;display:inline-block;line-height:0;max-width:100%}
.slider img{max-width:100%;display:block}.slider .after{position:absolute;left:0;top:0;clip-path:inset(0 0 0 50%)}
.slider input{width:100%}.crops{display:flex;flex-wrap:wrap;gap:14px;margin-top:.5em}
.crops figure{margin:0}.crops img{image-rendering:pixelated;border:1px solid #999}
figcaption{font-size:.8em;color:#444}.note{color:#555;font-size:.9em}
#viewer{display:none}
"""

SCRIPT = r"""
(function(){
const data = JSON.parse(document.getElementById('rows-data').textContent);
const cols = data.columns, rows = data.rows, table = document.getElementById('rows');
let sortCol = -1, dir = 1, page = 0, per = 50, shown = rows;
const fmt = (v) => v === null ? '–' : (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v));
function render(){
  const q = document.getElementById('filter').value.toLowerCase();
  const st = document.getElementById('status').value;
  shown = rows.filter(r => (!st || r[1] === st) && (!q || String(r[0]).toLowerCase().includes(q)));
  if (sortCol >= 0) shown = shown.slice().sort((a, b) => {
    const x = a[sortCol], y = b[sortCol];
    if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * dir; });
  const pages = Math.max(1, Math.ceil(shown.length / per)); page = Math.min(page, pages - 1);
  const body = table.tBodies[0]; body.textContent = '';
  for (const r of shown.slice(page * per, page * per + per)) {
    const tr = body.insertRow(); if (r[1] === 'error') tr.className = 'err';
    r.forEach((v, i) => { if (i < cols.length) { const td = tr.insertCell(); td.textContent = fmt(v);
      if (i === 0) { td.className = 'key'; td.title = String(v); } } });
    const td = tr.insertCell(), a = document.createElement('a');
    a.href = '#'; a.textContent = 'open'; a.className = 'open';
    a.addEventListener('click', (e) => { e.preventDefault(); openRow(r); }); td.appendChild(a);
  }
  document.getElementById('pageinfo').textContent = `${shown.length} rows, page ${page + 1} of ${pages}`;
}
function openRow(r){
  const cmp = data.compare[r[0]];
  document.querySelectorAll('.cmp.open').forEach(e => e.classList.remove('open'));
  const viewer = document.getElementById('viewer');
  if (cmp !== undefined) { const el = document.getElementById('cmp-' + cmp); el.classList.add('open');
    viewer.style.display = 'none'; el.scrollIntoView(); return; }
  const link = data.links[r[0]];
  viewer.style.display = 'block'; viewer.classList.add('open');
  document.getElementById('viewer-title').textContent = r[0];
  const msg = document.getElementById('viewer-note');
  if (!link) { msg.textContent = 'Not embedded in this page, and its files are not reachable from it (a bucket): ' +
      'see report.csv for this row; the files are at ' + data.where.input + ' and ' + data.where.output + ' under its key.';
    viewer.querySelector('.slider').style.display = 'none'; viewer.scrollIntoView(); return; }
  msg.textContent = 'Opened from the files (paths relative to this report). Drag the slider; the 1:1 view scrolls.';
  const s = viewer.querySelector('.slider'); s.style.display = 'inline-block';
  s.querySelector('.before').src = link[0]; s.querySelector('.after').src = link[1];
  document.getElementById('viewer-full-in').src = link[0]; document.getElementById('viewer-full-out').src = link[1];
  viewer.scrollIntoView();
}
table.tHead.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const c = +th.dataset.col; dir = (sortCol === c) ? -dir : 1; sortCol = c;
  table.tHead.querySelectorAll('th').forEach(h => h.classList.remove('sorted'));
  th.classList.add('sorted'); th.dataset.dir = dir > 0 ? ' ▲' : ' ▼'; render(); }));
document.getElementById('filter').addEventListener('input', () => { page = 0; render(); });
document.getElementById('status').addEventListener('change', () => { page = 0; render(); });
document.getElementById('prev').addEventListener('click', () => { page = Math.max(0, page - 1); render(); });
document.getElementById('next').addEventListener('click', () => { page += 1; render(); });
document.querySelectorAll('.slider input').forEach(inp => {
  const move = () => { inp.parentElement.querySelector('.after').style.clipPath = `inset(0 0 0 ${inp.value}%)`; };
  inp.addEventListener('input', move); move(); });
render();
window.raydenoiseReport = {rows: () => shown.length, openRow: (k) => openRow(rows.find(r => r[0] === k))};
})();
"""


def _json_script(value: Any) -> str:
    """JSON safe inside <script>: no "</" or "<!--" can end or change it."""
    return (
        json.dumps(value, allow_nan=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 4)
    return v


def comparison_html(
    i: int, c: Comparison, names: tuple[str, ...] = ("input", "output", "reference")
) -> str:
    """One image's section: title, slider, and its 1:1 crops."""
    r = c.row
    facts = []
    if r.get("psnr") is not None and r.get("input_psnr") is not None:
        facts.append(f"PSNR {r['psnr']:.2f} dB (input {r['input_psnr']:.2f} dB)")
    if r.get("input_noise") is not None:
        facts.append(f"noise level {r['input_noise']:.2f} → {(r.get('output_noise') or 0):.2f}")
    if r.get("change") is not None:
        facts.append(f"RMS change {r['change']:.2f}")
    if r.get("width"):
        facts.append(f"{r['width']}×{r['height']}")
    slider = ""
    if c.slider:
        slider = (
            f"<div class='slider'><img class='before' alt='before' src='{c.slider['before']}'>"
            f"<img class='after' alt='after' src='{c.slider['after']}'>"
            "<input type='range' min='0' max='100' value='50' aria-label='before/after'></div>"
            "<div class='note'>left of the line: before (input); right: after (output)</div>"
        )
    crops = []
    for crop in c.crops:
        figs = "".join(
            f"<figure><img src='{crop[n]}' width='{crop['size']}' height='{crop['size']}' alt='{n}'>"
            f"<figcaption>{n}</figcaption></figure>"
            for n in names
            if n in crop
        )
        crops.append(
            f"<div><div class='note'>1:1, {html.escape(crop['region'])} (x {crop['x']}, y {crop['y']})</div>"
            f"<div class='crops'>{figs}</div></div>"
        )
    return (
        f"<section class='cmp' id='cmp-{i}'><h3>{html.escape(c.label)}: {html.escape(c.key)}</h3>"
        f"<div class='note'>{html.escape('; '.join(facts))}</div>{slider}{''.join(crops)}</section>"
    )


def render_page(
    *,
    title: str,
    summary_words: str,
    facts: dict[str, Any],
    plots: list[str],
    columns: list[str],
    rows: list[list[Any]],
    total_rows: int,
    comparisons: list[Comparison],
    links: dict[str, tuple[str, str]],
    where: dict[str, str],
    statuses: list[str],
    crop_names: tuple[str, ...] = ("input", "output", "reference"),
    extra_html: str = "",
) -> str:
    """The whole page. ``rows``: table cells in ``columns`` order (key first, status second);
    ``links``: key -> (input, output) hrefs relative to the page for rows not embedded."""
    index = {c.key: i for i, c in enumerate(comparisons)}
    data = {
        "columns": columns,
        "rows": [[_cell(v) for v in r] for r in rows],
        "compare": index,
        "links": links,
        "where": where,
    }
    heads = (
        "".join(f"<th data-col='{i}'>{html.escape(c)}</th>" for i, c in enumerate(columns))
        + "<th></th>"
    )
    more = (
        ""
        if total_rows <= len(rows)
        else f"<p class='note'>This page holds {len(rows):,} of the {total_rows:,} rows (failures, and the best and "
        "worst); report.csv and report.parquet beside it hold every row.</p>"
    )
    fact_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    options = "".join(f"<option>{html.escape(s)}</option>" for s in statuses)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="summary" id="summary">{html.escape(summary_words)}</p>
<table>{fact_rows}</table>
{extra_html}
<h2>What changed</h2><div class="plots">{"".join(p for p in plots if p) or '<p class="note">Nothing to plot.</p>'}</div>
<h2>Every image</h2>{more}
<div class="controls"><input id="filter" placeholder="filter by name" aria-label="filter">
<select id="status" aria-label="status"><option value="">any status</option>{options}</select>
<button id="prev">◀</button><button id="next">▶</button><span id="pageinfo"></span></div>
<table id="rows"><thead><tr>{heads}</tr></thead><tbody></tbody></table>
<section class="cmp" id="viewer"><h3 id="viewer-title"></h3><div class="note" id="viewer-note"></div>
<div class="slider"><img class="before" alt="before"><img class="after" alt="after">
<input type="range" min="0" max="100" value="50" aria-label="before/after"></div>
<div class="crops" style="max-height:420px;overflow:auto"><figure><img id="viewer-full-in" alt="input 1:1"
style="max-width:none"><figcaption>input, 1:1</figcaption></figure><figure><img id="viewer-full-out" alt="output 1:1"
style="max-width:none"><figcaption>output, 1:1</figcaption></figure></div></section>
<h2>Before and after, at 1:1</h2>
{"".join(comparison_html(i, c, crop_names) for i, c in enumerate(comparisons)) or '<p class="note">No image was written.</p>'}
<script type="application/json" id="rows-data">{_json_script(data)}</script>
<script>{SCRIPT}</script></body></html>
"""


def relative_link(page_folder: str | None, target: str | None) -> str | None:
    """A link from the page's folder to a local file, percent-encoded; None for buckets."""
    if not page_folder or not target:
        return None
    from urllib.parse import quote

    try:
        return quote(os.path.relpath(target, page_folder).replace(os.sep, "/"), safe="/")
    except ValueError:
        return None


# ----------------------------------------------------------------------------- denoise's page

DONE = ("ok", "skipped")
TABLE_COLUMNS = [
    "key",
    "status",
    "width",
    "height",
    "seconds",
    "psnr",
    "input_psnr",
    "gain",
    "ssim",
    "input_noise",
    "output_noise",
    "change",
    "note",
]


def denoise_words(summary: dict[str, Any]) -> str:
    """The run in one sentence: "13 images denoised, none failed, 0.46 images/s" and the rest."""
    parts = [f"{plural(summary.get('ok', 0), 'image')} denoised"]
    failed = summary.get("failures", 0)
    parts.append(
        "none failed" if not failed else f"{failed:,} failed (see the table, status error)"
    )
    if summary.get("skipped"):
        parts.append(f"{summary['skipped']:,} already done and kept")
    if summary.get("excluded"):
        parts.append(f"{summary['excluded']:,} excluded by rule")
    if summary.get("not_done"):
        parts.append(f"{summary['not_done']:,} not done")
    if summary.get("images_per_s"):
        parts.append(
            f"{summary['images_per_s']:.2f} images/s over {duration(summary.get('seconds') or 0)}"
        )
    words = ", ".join(parts) + "."
    if summary.get("stopped"):
        words += f" The job stopped before it was complete ({summary['stopped']}): rerun to resume."
    gain = (
        (summary.get("metrics") or {}).get("psnr"),
        (summary.get("metrics") or {}).get("input_psnr"),
    )
    if gain[0] and gain[1] and gain[0].get("mean") is not None and gain[1].get("mean") is not None:
        words += f" Mean PSNR {gain[0]['mean']:.2f} dB against the reference (input {gain[1]['mean']:.2f} dB)."
    return words


def _gain(r: dict[str, Any]) -> float | None:
    if r.get("psnr") is None or r.get("input_psnr") is None:
        return None
    return float(r["psnr"]) - float(r["input_psnr"])


def denoise_page(
    *,
    title: str,
    summary: dict[str, Any],
    facts: dict[str, Any],
    batches: Callable[[list[str]], Iterator[Any]],
    comparisons: list[Comparison],
    links: Callable[[str], tuple[str, str] | None],
    where: dict[str, str],
) -> str:
    """denoise's report.html. ``batches(columns)``: the report's rows as pyarrow RecordBatches,
    read again for each pass (memory does not grow with the report); ``links(key)``: hrefs of a
    row's input and output relative to the page, or None."""
    import pyarrow.compute as pc

    def column(name: str, other: str | None = None) -> Callable[[], Iterator[np.ndarray]]:
        def values() -> Iterator[np.ndarray]:
            for b in batches(["status", name] + ([other] if other else [])):
                done = pc.fill_null(
                    pc.is_in(b.column("status"), pc.cast(np.array(DONE), b.column("status").type)),
                    False,
                )
                v = (
                    pc.filter(b.column(name), done)
                    .to_numpy(zero_copy_only=False)
                    .astype(np.float64)
                )
                if other:
                    v = v - pc.filter(b.column(other), done).to_numpy(zero_copy_only=False).astype(
                        np.float64
                    )
                yield np.nan_to_num(v, nan=np.nan, posinf=np.nan, neginf=np.nan)

        return values

    plots = []
    gain = histogram(column("psnr", "input_psnr"))
    if gain:
        plots.append(
            svg_histogram(
                "PSNR gain per image (output − input, dB)", "dB gained", [("gain", *gain)]
            )
        )
    levels = [
        (n, *h)
        for n, h in (
            ("input", histogram(column("input_noise"))),
            ("output", histogram(column("output_noise"))),
        )
        if h
    ]
    if levels:
        plots.append(
            svg_histogram("Estimated noise level per image (0–255)", "noise level σ", levels)
        )
    change = histogram(column("change"))
    if change:
        plots.append(
            svg_histogram(
                "Change per image: RMS of output − input (0–255)",
                "RMS change",
                [("change", *change)],
            )
        )
    (mp, secs), (when, secs2) = _sample_times(batches)
    if when.size:
        plots.append(
            svg_scatter(
                "Time per image over the run",
                "seconds since the first image finished",
                "s",
                when - when.min(),
                secs2,
            )
        )
    plots.append(svg_scatter("Time per image by size", "megapixels", "s", mp, secs))
    nodes = summary.get("nodes") or {}
    plots.append(svg_bars("Images per node", {n[:12]: c for n, c in nodes.items()}))

    def rows() -> Iterator[dict[str, Any]]:
        for b in batches(
            [
                "key",
                "status",
                "width",
                "height",
                "seconds",
                "psnr",
                "input_psnr",
                "ssim",
                "input_noise",
                "output_noise",
                "change",
                "error",
                "note",
            ]
        ):
            yield from b.to_pylist()

    ranked = _gain if gain else (lambda r: r.get("input_noise"))
    chosen, total = select_rows(rows, ranked)
    table = []
    embedded = {c.key for c in comparisons}
    link_map = {}
    for r in chosen:
        r["gain"] = _gain(r)
        r["note"] = r.get("error") or r.get("note")
        table.append([r.get(c) for c in TABLE_COLUMNS])
        if r["key"] not in embedded and r.get("status") in DONE:
            link = links(r["key"])
            if link:
                link_map[r["key"]] = link
    statuses = sorted({r[1] for r in table if r[1]})
    # columns no row has a value for (no reference: no PSNR) are left out
    shown = [
        i for i, c in enumerate(TABLE_COLUMNS) if i < 2 or any(r[i] is not None for r in table)
    ]
    table = [[r[i] for i in shown] for r in table]
    return render_page(
        title=title,
        summary_words=denoise_words(summary),
        facts=facts,
        plots=plots,
        columns=[TABLE_COLUMNS[i] for i in shown],
        rows=table,
        total_rows=total,
        comparisons=comparisons,
        links=link_map,
        where=where,
        statuses=statuses,
    )


def _sample_times(
    batches: Callable[[list[str]], Iterator[Any]], n: int = 1500, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` ok rows, a uniform sample (reservoir) of any report: ((megapixels, seconds),
    (finished, seconds)) — the second only for rows that record when they finished."""
    rng = np.random.default_rng(seed)
    sample: list[tuple[float, float, float]] = []
    seen = 0
    for b in batches(["status", "width", "height", "seconds", "finished"]):
        for r in b.to_pylist():
            if r["status"] != "ok" or r["seconds"] is None or not r["width"]:
                continue
            point = (
                r["width"] * r["height"] / 1e6,
                r["seconds"],
                math.nan if r["finished"] is None else r["finished"],
            )
            seen += 1
            if len(sample) < n:
                sample.append(point)
            else:
                j = int(rng.integers(seen))
                if j < n:
                    sample[j] = point
    a = np.asarray(sample, np.float64).reshape(-1, 3)
    timed = np.isfinite(a[:, 2])
    return (a[:, 0], a[:, 1]), (a[timed, 2], a[timed, 1])


# ----------------------------------------------------------------------------- evaluate's page


def evaluate_page(
    *,
    title: str,
    table: dict[str, dict[str, Any]],
    per_image: dict[str, dict[str, float]],
    facts: dict[str, Any],
    comparisons: list[Comparison],
    crop_names: tuple[str, ...],
) -> str:
    """evaluate's report.html: the methods table, per-image PSNR of every method side by side
    (``per_image``: id -> {method: PSNR}), plots and a few images' outputs at 1:1."""
    methods = list(table)
    baselines = [m for m in methods if m != "model" and m != "noisy input"] or [
        m for m in methods if m != "model"
    ]
    best_other = {
        i: max((v[m] for m in baselines if m in v and math.isfinite(v[m])), default=math.nan)
        for i, v in per_image.items()
    }
    gains = np.array(
        [per_image[i].get("model", math.nan) - best_other[i] for i in per_image], np.float64
    )
    wins = int(np.sum(gains > 0))
    n = len(per_image)
    means = ", ".join(
        f"{m} {table[m]['psnr']:.2f} dB" for m in methods if table[m].get("psnr") is not None
    )
    words = f"{plural(n, 'image')} scored by {plural(len(methods), 'method')}: mean PSNR {means}."
    if baselines and np.isfinite(gains).any():
        words += (
            f" The model beats the best of {', '.join(baselines)} on {wins:,} of {int(np.isfinite(gains).sum()):,} "
            f"images (median gain {np.nanmedian(gains):+.2f} dB)."
        )
    hist_series = []
    finite = [v for row in per_image.values() for v in row.values() if math.isfinite(v)]
    if finite:
        edges = np.linspace(min(finite), max(finite) + 1e-9, BINS + 1)
        for m in methods:
            vals = np.array(
                [row[m] for row in per_image.values() if m in row and math.isfinite(row[m])]
            )
            hist_series.append((m, np.histogram(vals, edges)[0], edges))
    plots = [
        svg_histogram("PSNR per image, by method", "PSNR (dB)", hist_series[:3]),
        *[
            svg_histogram(f"PSNR per image: {m}", "PSNR (dB)", [s])
            for s in hist_series[3:]
            for m in [s[0]]
        ],
    ]
    g = histogram(lambda: iter([gains]))
    if g:
        plots.append(
            svg_histogram("Model minus the best baseline, per image", "dB", [("gain", *g)])
        )
    plots.append(
        svg_bars(
            "Mean seconds per image (x1000 = ms)",
            {m: round(1000 * (table[m].get("seconds") or 0)) for m in methods},
        )
    )
    columns = ["key", "status", *[f"psnr {m}" for m in methods], "gain over best baseline"]
    rows = [
        [i, "ok", *[per_image[i].get(m) for m in methods], float(gains[k])]
        for k, i in enumerate(per_image)
    ]
    order = np.argsort(np.nan_to_num(gains, nan=0.0))
    if len(rows) > TABLE_ROWS:  # the worst and best gains
        keep = sorted(set(order[: TABLE_ROWS // 2]) | set(order[-TABLE_ROWS // 2 :]))
        rows = [rows[k] for k in keep]
    metric_rows = "".join(
        f"<tr><td>{html.escape(m)}</td>"
        + "".join(
            f"<td>{'–' if table[m].get(k) is None else format(table[m][k], fmt)}</td>"
            for k, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("mae", ".4f"), ("seconds", ".3f"))
        )
        + f"<td>{table[m].get('images', 0)}</td></tr>"
        for m in methods
    )
    extra = (
        "<h2>Methods</h2><table><tr><th>method</th><th>PSNR (dB)</th><th>SSIM</th><th>MAE</th>"
        f"<th>s/image</th><th>images</th></tr>{metric_rows}</table>"
    )
    return render_page(
        title=title,
        summary_words=words,
        facts=facts,
        plots=plots,
        columns=columns,
        rows=rows,
        total_rows=n,
        comparisons=comparisons,
        links={},
        where={"input": "", "output": ""},
        statuses=["ok"],
        crop_names=crop_names,
        extra_html=extra,
    )


def extremes(per_image: dict[str, dict[str, float]], n: int = 2) -> list[tuple[str, str]]:
    """(label, id) of the ``n`` images where the model gains most over the best other method,
    and the ``n`` where it gains least: the ones worth looking at."""
    scored = []
    for i, row in per_image.items():
        others = [v for m, v in row.items() if m != "model" and math.isfinite(v)]
        if "model" in row and math.isfinite(row["model"]) and others:
            scored.append((row["model"] - max(others), i))
    scored.sort()
    best = [("largest gain", i) for _, i in reversed(scored[-n:])]
    worst = [("smallest gain", i) for _, i in scored[:n] if i not in {b for _, b in best}]
    return best + worst
