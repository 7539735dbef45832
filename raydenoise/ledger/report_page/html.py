"""The page itself: its style and script, the table's rows, one comparison's section, and
``render_page`` that puts them together. No Ray."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

from .crops import Comparison

TABLE_ROWS = 2000  # rows embedded in the page's table; the full report is report.csv / .parquet

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
