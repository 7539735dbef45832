"""Plots as inline SVG, and histograms computed in streaming passes. No Ray."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator

import numpy as np

BINS = 30

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
