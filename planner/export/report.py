"""HTML reports: one page per plan and an index page comparing every plan of a run.

The pages load nothing from the network: the CSS is inline, the growth plot is an
inline SVG (:mod:`planner.export.svgplot`), and the screenshots are PNG files beside the
report, linked by relative paths (the plan's folder is the unit to copy or zip). The
pages hold no times or dates, so the same plan and settings give the same bytes.

Every page says the planner is for research and education only, not clinical use.
"""

from __future__ import annotations

from html import escape

import numpy as np

from planner import NOT_FOR_CLINICAL_USE, __version__
from planner.export.svgplot import Band, Series, line_plot_svg
from planner.scene import palette

STYLE = """
:root { color-scheme: light; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2230;
       background: #f4f5f7; line-height: 1.4; }
.banner { background: #5a1d00; color: #ffe3c7; padding: 8px 16px; font-weight: 600; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 20px 40px; }
h1 { margin: 16px 0 4px; font-size: 1.6em; }
h2 { margin-top: 28px; border-bottom: 2px solid #d5d9e0; padding-bottom: 4px; font-size: 1.25em; }
h3 { font-size: 1.05em; margin: 18px 0 8px; }
.meta { color: #5a6172; font-size: 0.9em; margin: 2px 0; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d5d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #e9ecf1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warnings li { color: #8a1c00; margin: 4px 0; }
.ok { color: #1d6b2a; font-weight: 600; }
.failed { color: #a01010; font-weight: 600; }
.skipped { color: #5a6172; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid #d5d9e0; padding: 6px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85em; color: #5a6172; margin-top: 4px; }
.plot svg { max-width: 100%; height: auto; }
.thumb { width: 160px; height: auto; display: block; }
.wide { overflow-x: auto; }
code { background: #e9ecf1; padding: 0 3px; }
footer { margin-top: 36px; color: #5a6172; font-size: 0.85em; }
"""

LEVEL_DASHES = {0.0: None, -20.0: "8 4", -40.0: "2 3"}


# ---------------------------------------------------------------- helpers
def _num(value, digits: int = 2, *, unit: str = "") -> str:
    if value is None:
        return "\N{EM DASH}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return escape(str(value))
    if not np.isfinite(number):
        return "\N{EM DASH}"
    text = f"{number:.{digits}f}"
    return f"{text} {unit}".strip()


def _table(headers, rows, *, numeric=()) -> str:
    """An HTML table; ``rows`` hold already escaped HTML; columns in ``numeric`` align right."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<div class=\"banner\" role=\"note\">{escape(NOT_FOR_CLINICAL_USE)} Predictions of a simplified "
        "heat-transfer model, not measurements.</div>\n"
        f"<main>\n{body}\n<footer>cryoplan {escape(__version__)}. {escape(NOT_FOR_CLINICAL_USE)}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _vec(values) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in values) + ")"


# ---------------------------------------------------------------- growth plot
def growth_plot_svg(history: dict, levels_c, protocol, *, width: int = 760, height: int = 340) -> str:
    """SVG plot of the volume colder than each isotherm level against time.

    Parameters
    ----------
    history : dict
        ``ThermalResult.history``: ``"time"`` (m,) s and ``"volume_ml"`` {level: (m,) ml}.
    levels_c : sequence of float
        Levels to draw, degC (those missing from ``history`` are skipped).
    protocol : sequence of dict or step objects
        Steps with ``kind`` and ``duration_s``: freeze steps are shaded blue, thaws orange.
    """
    times = np.asarray(history.get("time", []), dtype=float)
    volumes = history.get("volume_ml", {})
    series = []
    for level in levels_c:
        key = next((k for k in volumes if abs(float(k) - float(level)) < 1e-9), None)
        if key is None or times.size == 0:
            continue
        values = np.asarray(volumes[key], dtype=float)
        # The history starts after the first step; the protocol starts with no ice.
        x = np.concatenate([[0.0], times]) if times[0] > 0 else times
        y = np.concatenate([[0.0], values]) if times[0] > 0 else values
        series.append(Series(f"{float(level):g} \N{DEGREE SIGN}C", x, y, palette.to_hex(palette.isotherm_color(level)),
                             dash=LEVEL_DASHES.get(float(level)), width=2.5))
    bands, start = [], 0.0
    counts: dict[str, int] = {}
    for step in protocol:
        kind = step["kind"] if isinstance(step, dict) else step.kind
        duration = float(step["duration_s"] if isinstance(step, dict) else step.duration_s)
        counts[kind] = counts.get(kind, 0) + 1
        color = "#1b3a66" if kind == "freeze" else "#4a3320"
        bands.append(Band(start, start + duration, f"{kind.replace('_', ' ')} {counts[kind]}", color))
        start += duration
    return line_plot_svg(series, width=width, height=height, title="Ice-ball growth",
                         x_label="time (s)", y_label="volume colder than the level (ml)", bands=bands)


# ---------------------------------------------------------------- per plan
def summarise(run, metrics: dict | None) -> dict:
    """One plan's row of the comparison table (JSON-ready).

    Parameters
    ----------
    run : SimulationRun
    metrics : dict or None
        :meth:`planner.metrics.PlanMetrics.to_dict`.
    """
    from collections import Counter

    plan = run.plan
    result = run.result
    models = Counter(probe.model for probe in plan.probes)
    tissue = plan.tissue.source
    if plan.tissue.source == "homogeneous":
        tissue = f"homogeneous {plan.tissue.tissue_class}"
    elif plan.volume is not None and hasattr(plan.volume, "demo"):
        tissue = f"{tissue} (demo {plan.volume.demo})"
    summary = {
        "probes": ", ".join(f"{count} \N{MULTIPLICATION SIGN} {model}" for model, count in sorted(models.items())),
        "n_probes": len(plan.probes),
        "protocol": " / ".join(f"{step.kind.replace('_', ' ')} {step.duration_s:g} s" for step in plan.protocol),
        "protocol_s": float(plan.total_duration_s),
        "tissue": tissue,
        "spacing_mm": round(float(result.grid.spacing), 4),
        "volume_ml": {f"{float(level):g}": round(float(result.isotherm_volume_ml(float(level), "min")), 4)
                      for level in plan.isotherms_c},
        "min_temperature_c": round(float(np.min(result.min_temperature)), 2),
        "targets": None,
        "target_fraction_below_-20C": None,
        "target_covered_mm_below_-20C": None,
        "skin_clearance_mm": None,
        "warnings": None,
    }
    if metrics is not None:
        parts, fractions, covered = [], [], []
        for nerve in metrics.get("nerves", []):
            if not nerve.get("target"):
                continue
            entry = next((c for c in nerve.get("coverage", []) if abs(float(c["level_c"]) + 20.0) < 1e-9), None)
            if entry is None:
                continue
            fractions.append(entry["fraction"])
            covered.append(entry["covered_mm"])
            parts.append(f"{nerve['name']}: {100 * entry['fraction']:.0f}% ({entry['covered_mm']:.1f} mm)")
        if parts:
            summary["targets"] = "; ".join(parts)
            summary["target_fraction_below_-20C"] = min(fractions)
            summary["target_covered_mm_below_-20C"] = round(sum(covered), 2)
        skin = metrics.get("skin")
        if skin:
            summary["skin_clearance_mm"] = skin.get("clearance_mm")
        summary["warnings"] = len(metrics.get("warnings", []))
    return summary


def _metrics_html(record: dict) -> str:
    metrics = record.get("metrics")
    parts = []
    if metrics is None:
        parts.append(f"<p>Metrics were not computed: {escape(record.get('metrics_note') or 'unavailable')}.</p>")
    else:
        rows = []
        for nerve in metrics.get("nerves", []):
            for entry in nerve.get("coverage", []):
                rows.append([
                    escape(nerve["name"]), "target" if nerve.get("target") else "spare",
                    f"below {float(entry['level_c']):g} \N{DEGREE SIGN}C",
                    _num(entry.get("covered_mm"), 1), _num(100 * entry["fraction"] if entry.get("fraction") is not None
                                                           else None, 0),
                    _num(entry.get("longest_mm"), 1), _num(nerve.get("length_mm"), 1), _num(nerve.get("coldest_c"), 1),
                ])
        if rows:
            parts.append("<h3>Nerves</h3>")
            parts.append(_table(["nerve", "role", "criterion", "covered (mm)", "covered (%)", "longest stretch (mm)",
                                 "judged length (mm)", "coldest (\N{DEGREE SIGN}C)"], rows, numeric=(3, 4, 5, 6, 7)))
        approaches = ([metrics["skin"]] if metrics.get("skin") else []) + list(metrics.get("structures", []))
        if approaches:
            rows = [[escape(a["name"]), escape(a["kind"]), _num(a.get("clearance_mm"), 1),
                     "yes" if a.get("reached") else "no", _num(a.get("coldest_c"), 1)] for a in approaches]
            parts.append("<h3>Structures to spare</h3>")
            parts.append(_table(["structure", "kind", "gap to the 0 \N{DEGREE SIGN}C surface (mm)", "reached by ice",
                                 "coldest (\N{DEGREE SIGN}C)"], rows, numeric=(2, 4)))
        volumes = metrics.get("isotherm_volumes_ml", [])
        if volumes:
            rows = [[f"{float(v['level_c']):g} \N{DEGREE SIGN}C", _num(v.get("volume_ml"), 3),
                     _num(v.get("final_volume_ml"), 3)] for v in volumes]
            parts.append("<h3>Ice volumes</h3>")
            parts.append(_table(["isotherm", "coldest reached (ml)", "at the end (ml)"], rows, numeric=(1, 2)))
        parts.append(f"<p>Coldest temperature anywhere: {_num(metrics.get('min_temperature_c'), 1)} \N{DEGREE SIGN}C.</p>")
    sizes = record.get("isotherm_sizes", [])
    if sizes:
        rows = [[_num(s["time_s"], 0), f"{s['level_c']:g} \N{DEGREE SIGN}C", _num(s["volume_ml"], 3),
                 _num(s["along_mm"], 1), _num(s["across_mm"], 1), _num(s["max_diameter_mm"], 1)] for s in sizes]
        parts.append("<h3>Isotherm sizes at the exported times</h3>")
        parts.append(_table(["time (s)", "isotherm", "volume (ml)", "along the probes (mm)", "across (mm)",
                             "largest diameter (mm)"], rows, numeric=(0, 2, 3, 4, 5)))
    return "\n".join(parts)


def _plan_html(record: dict) -> str:
    plan = record["plan"]
    params = plan.get("params", {})
    parts = []
    tissue = params.get("tissue", {})
    volume = params.get("volume")
    if volume is None:
        volume_text = "none (a homogeneous block)"
    elif "demo" in volume:
        volume_text = f"built-in demo anatomy <code>{escape(volume['demo'])}</code>"
    else:
        volume_text = f"<code>{escape(volume.get('path', ''))}</code> (sha256 {escape(volume.get('sha256', '')[:12])}\N{HORIZONTAL ELLIPSIS})"
    rows = [
        ["image", volume_text],
        ["tissue", escape(tissue.get("source", "")) + (f" ({escape(tissue['class'])})" if tissue.get("class") else "")],
        ["tissue overrides", escape(", ".join(f"{k}: {v}" for k, v in tissue.get("overrides", {}).items()) or "none")],
        ["isotherms", escape(", ".join(f"{v:g} \N{DEGREE SIGN}C" for v in params.get("isotherms_c", [])))],
        ["grid spacing", escape(f"{record['solver']['spacing_mm']:g} mm (finest cell; "
                                f"{'set for this export' if record['settings'].get('spacing_mm') else 'plan or solver default'})")],
        ["solver", escape(f"{record['solver']['method']}, {record['solver']['steps']} steps, "
                          f"grid {' x '.join(str(n) for n in record['solver']['cells_xyz'])} cells")],
    ]
    parts.append(_table(["setting", "value"], rows))
    probes = plan.get("probes_resolved", [])
    if probes:
        rows = [[escape(p["name"]), escape(p["model"]), _vec(p["tip"]), _vec(p["entry"]), _num(p["diameter_mm"], 2),
                 _num(p["active_length_mm"], 1), escape(p["boundary"])] for p in probes]
        parts.append("<h3>Probes</h3>")
        parts.append(_table(["probe", "model", "tip (LPS mm)", "entry (LPS mm)", "diameter (mm)", "active length (mm)",
                             "cooling"], rows, numeric=(4, 5)))
    protocol = params.get("protocol", [])
    if protocol:
        rows = []
        elapsed = 0.0
        for step in protocol:
            driven = "all" if step.get("probes") is None else ", ".join(str(p) for p in step["probes"])
            extra = f"{step['thaw_temperature_c']:g} \N{DEGREE SIGN}C" if "thaw_temperature_c" in step else ""
            rows.append([escape(step["kind"].replace("_", " ")), _num(step["duration_s"], 0),
                         f"{elapsed:g}\N{EN DASH}{elapsed + step['duration_s']:g}", escape(driven), escape(extra)])
            elapsed += step["duration_s"]
        parts.append("<h3>Protocol</h3>")
        parts.append(_table(["step", "duration (s)", "time (s)", "probes", "thaw temperature"], rows, numeric=(1,)))
    nerves = params.get("nerves", [])
    if nerves:
        rows = [[escape(n["name"]), "target" if n.get("target") else "spare", _num(n["radius_mm"], 2),
                 str(len(n["points"]))] for n in nerves]
        parts.append("<h3>Nerves</h3>")
        parts.append(_table(["nerve", "role", "radius (mm)", "centreline points"], rows, numeric=(2, 3)))
    return "\n".join(parts)


def plan_report_html(record: dict, *, growth_svg: str, index_href: str | None = "../index.html") -> str:
    """The report page of one plan.

    Parameters
    ----------
    record : dict
        The plan's export record (:mod:`planner.export.manifest`): ``plan``, ``files``
        (paths relative to the run's folder), ``metrics``, ``isotherm_sizes``, ``times``,
        ``solver``, ``settings``, ``notes``.
    growth_svg : str
        The growth plot, inlined.
    index_href : str or None
        Link back to the run's index page.
    """
    plan = record["plan"]
    slug = record["slug"]
    prefix = slug + "/"

    def local(path: str) -> str:
        return path[len(prefix):] if path.startswith(prefix) else path

    body = []
    if index_href:
        body.append(f'<p class="meta"><a href="{escape(index_href)}">\N{LEFTWARDS ARROW} all plans of this export</a></p>')
    body.append(f"<h1>{escape(plan['name'])}</h1>")
    body.append(f'<p class="meta">Plan file <code>{escape(plan["file_name"])}</code>, sha256 '
                f"<code>{escape(plan['sha256'][:16])}\N{HORIZONTAL ELLIPSIS}</code></p>")
    if plan.get("description"):
        body.append(f"<p>{escape(plan['description'])}</p>")

    metrics = record.get("metrics") or {}
    warnings = metrics.get("warnings", [])
    body.append('<h2 id="warnings">Warnings</h2>')
    if warnings:
        items = "".join(f"<li>{escape(w['message'])}</li>" for w in warnings)
        body.append(f'<ul class="warnings">{items}</ul>')
    elif record.get("metrics") is None:
        body.append("<p>Not checked (no metrics).</p>")
    else:
        body.append("<p>None.</p>")

    body.append('<h2 id="metrics">Metrics</h2>')
    body.append(_metrics_html(record))
    body.append('<h2 id="growth">Ice-ball growth</h2>')
    body.append(f'<div class="plot">{growth_svg}</div>')

    body.append('<h2 id="pictures">Pictures</h2>')
    images = [f for f in record["files"] if f.get("kind") == "image"]
    for time_entry in record.get("times", []):
        time_s = time_entry["time_s"]
        shown = [f for f in images if abs(f["time_s"] - time_s) < 1e-9]
        if not shown:
            continue
        body.append(f"<h3>t = {time_s:g} s ({escape(time_entry['phase'])})</h3>")
        figures = []
        for image in shown:
            href = escape(local(image["path"]))
            width, height = image.get("size", [None, None])
            size_attrs = f' width="{width}" height="{height}"' if width else ""
            caption = escape(f"{image['view']} at {time_s:g} s")
            figures.append(f'<figure><a href="{href}"><img src="{href}" alt="{caption}"{size_attrs}></a>'
                           f"<figcaption>{caption}</figcaption></figure>")
        body.append(f'<div class="grid">{"".join(figures)}</div>')

    body.append('<h2 id="plan">Plan</h2>')
    body.append(_plan_html(record))

    body.append('<h2 id="data">Data files</h2>')
    body.append("<p>Coordinates are world LPS millimetres (DICOM patient coordinates). Surfaces say "
                "<code>SPACE=LPS</code> as 3D Slicer reads it. The NIfTI maps "
                + ("share the source image's voxel grid and affine: load them over the image in 3D Slicer or ITK-SNAP."
                   if record.get("maps_geometry") == "source" else
                   "are on the solver's grid (the plan has no image).")
                + " Label maps hold 1 where the tissue got colder than the level at any time of the protocol.</p>")
    rows = []
    for entry in record["files"]:
        if entry.get("kind") in ("image", "report"):
            continue
        href = escape(local(entry["path"]))
        what = escape(entry.get("kind", "").replace("_", " "))
        detail = []
        if entry.get("level_c") is not None:
            detail.append(f"{entry['level_c']:g} \N{DEGREE SIGN}C")
        if entry.get("time_s") is not None:
            detail.append(f"t = {entry['time_s']:g} s")
        rows.append([f'<a href="{href}">{escape(local(entry["path"]))}</a>', what, escape(", ".join(detail)),
                     _num(entry["bytes"] / 1024, 1)])
    body.append(_table(["file", "what", "detail", "KiB"], rows, numeric=(3,)))

    notes = record.get("notes", [])
    if notes:
        body.append('<h2 id="notes">Notes</h2>')
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    return _page(f"{plan['name']} \N{EM DASH} cryoplan report", "\n".join(body))


# ---------------------------------------------------------------- index
COMPARISON_COLUMNS = (
    "plan", "status", "plan_file", "probes", "protocol_s", "tissue", "spacing_mm", "volume_0C_ml",
    "volume_-20C_ml", "volume_-40C_ml", "min_temperature_c", "target_fraction_below_-20C",
    "target_covered_mm_below_-20C", "skin_clearance_mm", "warnings", "message",
)


def comparison_rows(entries) -> list[tuple]:
    """Rows of :data:`COMPARISON_COLUMNS` for the run's plans (``entries`` as for :func:`index_html`)."""
    rows = []
    for entry in entries:
        record = entry.get("record")
        summary = (record or {}).get("summary", {})
        volumes = summary.get("volume_ml", {})
        rows.append((
            (record or {}).get("plan", {}).get("name", entry.get("name", "")), entry["status"], entry.get("plan_file", ""),
            summary.get("probes"), summary.get("protocol_s"), summary.get("tissue"), summary.get("spacing_mm"),
            volumes.get("0"), volumes.get("-20"), volumes.get("-40"), summary.get("min_temperature_c"),
            summary.get("target_fraction_below_-20C"), summary.get("target_covered_mm_below_-20C"),
            summary.get("skin_clearance_mm"), summary.get("warnings"), entry.get("message", ""),
        ))
    return rows


def index_html(entries, settings: dict) -> str:
    """The run's index page: a comparison table linking each plan's report.

    Parameters
    ----------
    entries : sequence of dict
        Per plan: ``status`` (``"ok"``, ``"skipped"``, ``"failed"``), ``plan_file``,
        ``message``, ``slug`` and, for plans with outputs, ``record`` (the plan's export
        record).
    settings : dict
        :meth:`ExportSettings.fingerprint`.
    """
    body = ["<h1>cryoplan export</h1>"]
    times = ", ".join(str(t) if isinstance(t, str) else f"{t:g} s" for t in settings.get("times", []))
    body.append(f'<p class="meta">Views: {escape(", ".join(settings.get("views", [])))}. Times: {escape(times)}. '
                f"Pictures {settings['size'][0]} \N{MULTIPLICATION SIGN} {settings['size'][1]} px. "
                f"Grid spacing: {escape(str(settings.get('spacing_mm') or 'plan or solver default'))}"
                f"{' mm' if settings.get('spacing_mm') else ''}.</p>")
    counts = {status: sum(1 for e in entries if e["status"] == status) for status in ("ok", "skipped", "failed")}
    body.append(f'<p>{len(entries)} plans: {counts["ok"]} exported, {counts["skipped"]} up to date from an earlier run, '
                f'{counts["failed"]} failed.</p>')
    rows = []
    for entry in entries:
        record = entry.get("record")
        status = entry["status"]
        label = {"ok": "exported", "skipped": "up to date", "failed": "failed"}[status]
        if record is None:
            rows.append([escape(entry.get("plan_file", "")), f'<span class="{status}">{label}</span>', "",
                         escape(entry.get("message", ""))] + [""] * 9)
            continue
        summary = record.get("summary", {})
        volumes = summary.get("volume_ml", {})
        report = f"{entry['slug']}/report.html"
        images = [f for f in record["files"] if f.get("kind") == "image"]
        thumb = (f'<a href="{escape(report)}"><img class="thumb" src="{escape(images[0]["path"])}" '
                 f'alt="{escape(images[0]["view"])} view"></a>') if images else ""
        rows.append([
            f'<a href="{escape(report)}">{escape(record["plan"]["name"])}</a><br>'
            f'<span class="meta">{escape(entry.get("plan_file", ""))}</span>',
            f'<span class="{status}">{label}</span>',
            thumb,
            escape(summary.get("targets") or "\N{EM DASH}"),
            _num(summary.get("skin_clearance_mm"), 1),
            *(_num(volumes.get(key), 2) for key in ("0", "-20", "-40")),
            _num(summary.get("min_temperature_c"), 1),
            "\N{EM DASH}" if summary.get("warnings") is None else str(summary["warnings"]),
            escape(summary.get("probes", "")),
            escape(summary.get("protocol", "")),
            _num(summary.get("spacing_mm"), 2),
        ])
    table = _table(["plan", "status", "picture", "target nerves below -20 \N{DEGREE SIGN}C", "skin gap (mm)",
                    "ice 0 \N{DEGREE SIGN}C (ml)", "ice -20 \N{DEGREE SIGN}C (ml)", "ice -40 \N{DEGREE SIGN}C (ml)",
                    "coldest (\N{DEGREE SIGN}C)", "warnings", "probes", "protocol", "grid (mm)"], rows,
                   numeric=(4, 5, 6, 7, 8, 9, 12))
    body.append(f'<div class="wide">{table}</div>')
    body.append('<p class="meta">Ice volumes and the coldest temperature are over the whole protocol (the '
                'lowest temperature each place reached); the skin gap is from the 0 \N{DEGREE SIGN}C surface.</p>')
    body.append('<p class="meta">The same table as CSV: <a href="comparison.csv">comparison.csv</a>; every file with '
                'its checksum: <a href="manifest.json">manifest.json</a>.</p>')
    return _page("cryoplan export", "\n".join(body))
