"""A small SVG line plotter for reports (no plotting library needed).

Draws a few series against shared axes with tick marks at round numbers, axis labels,
a legend and optional shaded bands along x (e.g. the protocol's freeze phases). The
output is plain text that embeds in HTML as it is, and the same input gives the same
bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np


@dataclass(frozen=True)
class Series:
    """One line: ``x`` and ``y`` (same length), a legend label and a CSS colour."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str
    dash: str | None = None
    width: float = 2.0


@dataclass(frozen=True)
class Band:
    """A shaded stretch of x from ``start`` to ``stop`` with a short label at its top."""

    start: float
    stop: float
    label: str
    color: str


def nice_ticks(low: float, high: float, *, target: int = 6) -> list[float]:
    """Round tick values covering ``low``..``high`` (about ``target`` of them, steps 1, 2 or 5 x 10^n)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("nice_ticks: limits must be finite")
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(target - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - step * 1e-9:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    """Tick label: no trailing zeros, no ``-0``."""
    text = f"{value:.6g}"
    return "0" if text in ("-0", "0") else text


def thin_points(x: np.ndarray, y: np.ndarray, *, max_points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a polyline, keeping the first, the last and each bucket's
    lowest and highest y (so peaks survive)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size <= max_points:
        return x, y
    buckets = np.array_split(np.arange(x.size), max_points // 2)
    keep = {0, x.size - 1}
    for bucket in buckets:
        if bucket.size:
            keep.add(int(bucket[np.argmin(y[bucket])]))
            keep.add(int(bucket[np.argmax(y[bucket])]))
    order = np.array(sorted(keep))
    return x[order], y[order]


def line_plot_svg(
    series: Sequence[Series],
    *,
    width: int = 720,
    height: int = 360,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    bands: Sequence[Band] = (),
    background: str = "#14171f",
    foreground: str = "#e6e6e6",
    grid_color: str = "#3a3f4b",
    y_min: float | None = 0.0,
) -> str:
    """An SVG line plot of ``series``.

    Parameters
    ----------
    series : sequence of Series
        Lines to draw; an empty sequence gives an empty frame with "no data".
    width, height : int
        Size of the drawing, px.
    title, x_label, y_label : str
        Texts (escaped).
    bands : sequence of Band
        Shaded x ranges drawn behind the lines.
    background, foreground, grid_color : str
        CSS colours of the plot.
    y_min : float or None
        Lower y limit (None: from the data).

    Returns
    -------
    str
        An ``<svg>`` element with ``viewBox`` and ``role="img"``.
    """
    left, right, top, bottom = 64, 16, 34 if title else 14, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [np.asarray(s.x, dtype=float) for s in series]
    ys = [np.asarray(s.y, dtype=float) for s in series]
    band_x = np.array([b.start for b in bands] + [b.stop for b in bands], dtype=float)
    finite_x = np.concatenate([x[np.isfinite(x)] for x in xs] + [band_x])
    finite_y = np.concatenate([y[np.isfinite(y)] for y in ys] + [np.zeros(0)])
    x_lo, x_hi = (float(finite_x.min()), float(finite_x.max())) if finite_x.size else (0.0, 1.0)
    y_lo = float(finite_y.min()) if finite_y.size else 0.0
    y_hi = float(finite_y.max()) if finite_y.size else 1.0
    if y_min is not None:
        y_lo = min(y_min, y_lo)
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0
    x_ticks = nice_ticks(x_lo, x_hi)
    y_ticks = nice_ticks(y_lo, y_hi, target=5)
    x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    y_lo, y_hi = min(y_lo, y_ticks[0]), max(y_hi, y_ticks[-1])

    def px(x):
        return left + (np.asarray(x, dtype=float) - x_lo) / (x_hi - x_lo) * plot_w

    def py(y):
        return top + plot_h - (np.asarray(y, dtype=float) - y_lo) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title or y_label)}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{background}"/>',
    ]
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="20" fill="{foreground}" text-anchor="middle" font-size="14">'
                   f"{escape(title)}</text>")
    for band in bands:
        x0, x1 = float(px(band.start)), float(px(band.stop))
        out.append(f'<rect x="{x0:.2f}" y="{top}" width="{max(x1 - x0, 0):.2f}" height="{plot_h}" '
                   f'fill="{band.color}"/>')
        if x1 - x0 > 30 and band.label:
            out.append(f'<text x="{(x0 + x1) / 2:.2f}" y="{top + 13}" fill="{foreground}" fill-opacity="0.7" '
                       f'text-anchor="middle" font-size="10">{escape(band.label)}</text>')
    for tick in x_ticks:
        x = float(px(tick))
        out.append(f'<line x1="{x:.2f}" y1="{top}" x2="{x:.2f}" y2="{top + plot_h}" stroke="{grid_color}" '
                   f'stroke-width="1"/>')
        out.append(f'<text x="{x:.2f}" y="{top + plot_h + 16}" fill="{foreground}" text-anchor="middle">'
                   f"{_fmt(tick)}</text>")
    for tick in y_ticks:
        y = float(py(tick))
        out.append(f'<line x1="{left}" y1="{y:.2f}" x2="{left + plot_w}" y2="{y:.2f}" stroke="{grid_color}" '
                   f'stroke-width="1"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.2f}" fill="{foreground}" text-anchor="end">{_fmt(tick)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{foreground}" '
               f'stroke-width="1"/>')
    if x_label:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" fill="{foreground}" text-anchor="middle">'
                   f"{escape(x_label)}</text>")
    if y_label:
        out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" fill="{foreground}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{escape(y_label)}</text>')
    if not series:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" fill="{foreground}" '
                   f'text-anchor="middle">no data</text>')
    for s, x, y in zip(series, xs, ys):
        x, y = thin_points(x, y)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 1:
            continue
        points = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(px(x[ok]), py(y[ok])))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="{s.width:g}" '
                   f'stroke-linejoin="round"{dash}><title>{escape(s.label)}</title></polyline>')
    # Legend, top left inside the frame.
    for index, s in enumerate(series):
        y = top + 12 + 18 * index + (14 if bands else 0)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<line x1="{left + 10}" y1="{y}" x2="{left + 34}" y2="{y}" stroke="{s.color}" '
                   f'stroke-width="{max(s.width, 2):g}"{dash}/>')
        out.append(f'<text x="{left + 40}" y="{y + 4}" fill="{foreground}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
