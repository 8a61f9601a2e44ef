"""The ``planner`` command line: one program, one subcommand per job.

Every subcommand prints human text by default and JSON with ``--json``. Errors are
one line on stderr: exit code 2 for bad input (:class:`planner.errors.InputError`
and usage errors), 1 for anything else. Set ``CRYOPLAN_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from planner import NOT_FOR_CLINICAL_USE, __version__
from planner.errors import InputError, PlannerError

app = typer.Typer(
    name="planner",
    help=f"cryoplan: plan cryoneurolysis ice balls. {NOT_FOR_CLINICAL_USE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEMO_PREFIX = "demo:"


def _print_json(payload) -> None:
    typer.echo(json.dumps(payload, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _load_volume_argument(path: str, *, series_uid: str | None = None, modality: str | None = None):
    """Read ``path``, or build a demo case's CT for ``demo:NAME``."""
    if path.startswith(DEMO_PREFIX):
        from planner.demo import build_demo_case

        return build_demo_case(path[len(DEMO_PREFIX) :]).ct
    from planner.imaging import read_volume

    return read_volume(path, series_uid=series_uid, modality=modality)


def volume_info(volume) -> dict:
    """JSON-ready description of a :class:`planner.volume.Volume` for ``planner info``."""
    low, high = volume.value_range()
    meta = volume.metadata
    info = {
        "source": meta.get("source"),
        "modality": volume.modality,
        "shape_xyz": list(volume.shape_xyz),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "origin_mm": [round(float(o), 4) for o in volume.origin],
        # row-major, as ITK's GetDirection(): the columns are the i, j, k axes in LPS
        "direction": [round(float(d), 6) for d in volume.direction.ravel()],
        "value_range": [low, high],
        "units": volume.units,
        "dtype": str(volume.array.dtype),
    }
    if volume.is_cine:
        info["frames"] = volume.n_frames
        times = volume.frame_times
        info["frame_time_ms"] = round(float(np.median(np.diff(times))) * 1000, 4) if len(times) > 1 else None
        del info["shape_xyz"]
        info["frame_shape_xy"] = list(volume.shape_xyz[:2])
    for key in ("patient_name", "patient_id", "study_description", "series_description", "series_uid"):
        if meta.get(key):
            info[key] = meta[key]
    if meta.get("series"):
        info["series"] = meta["series"]
    if meta.get("notes"):
        info["notes"] = list(meta["notes"])
    return info


def _format_info(info: dict) -> str:
    lines = [f"{info.get('source') or ''}"]

    def row(label, value):
        lines.append(f"  {label:<18}{value}")

    row("modality", info["modality"])
    if "frames" in info:
        row("frames", f"{info['frames']} (cine loop; frame time {info['frame_time_ms']} ms)")
        row("frame size (x, y)", " x ".join(str(n) for n in info["frame_shape_xy"]))
    else:
        row("shape (x, y, z)", " x ".join(str(n) for n in info["shape_xyz"]))
    row("spacing (mm)", ", ".join(f"{s:g}" for s in info["spacing_mm"]))
    row("origin (mm, LPS)", ", ".join(f"{o:g}" for o in info["origin_mm"]))
    # "direction" is the 3x3 matrix row by row (ITK's order); its columns are the i, j, k axes.
    axes = np.reshape(info["direction"], (3, 3)).T
    row("direction", "  ".join(f"{name}=({', '.join(f'{v:.4g}' for v in axis)})"
                                for name, axis in zip("ijk", axes)))
    low, high = info["value_range"]
    row("value range", f"{low:g} .. {high:g} {info['units']}".rstrip())
    for key, label in (
        ("patient_name", "patient"),
        ("patient_id", "patient id"),
        ("study_description", "study"),
        ("series_description", "series"),
        ("series_uid", "series uid"),
    ):
        if key in info:
            row(label, info[key])
    if "series" in info:
        lines.append(f"  series found ({len(info['series'])}):")
        for series in info["series"]:
            lines.append("    " + "  ".join(f"{k}={v}" for k, v in series.items() if v not in (None, "")))
    for note in info.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


@app.command()
def info(
    path: str = typer.Argument(..., help="Image file, DICOM folder, or demo:NAME."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID to load from a DICOM folder."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Override the modality (e.g. US)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe an image: modality, shape, spacing, origin, direction, value range."""
    volume = _load_volume_argument(path, series_uid=series, modality=modality)
    description = volume_info(volume)
    if path.startswith(DEMO_PREFIX):
        description["source"] = path
    if as_json:
        _print_json(description)
    else:
        typer.echo(_format_info(description))


@app.command()
def demo(
    name: Optional[str] = typer.Argument(None, help="Demo case name; omit to list them."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the case's files into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the built-in demo anatomies, or write one to files."""
    from planner.demo import build_demo_case, list_demo_cases, write_demo_case

    if name is None:
        cases = [build_demo_case(case) for case in list_demo_cases()]
        if as_json:
            _print_json([{"name": c.name, "title": c.title, "description": c.description} for c in cases])
        else:
            for case in cases:
                typer.echo(f"{case.name:<14}{case.title}")
        return
    case = build_demo_case(name)
    if out is None:
        payload = {"name": case.name, "title": case.title, "description": case.description,
                   "nerves": [n.name for n in case.nerves]}
        _print_json(payload) if as_json else typer.echo(f"{case.title}\n\n{case.description}")
        return
    written = write_demo_case(name, out)
    if as_json:
        _print_json({key: str(value) for key, value in written.items()})
    else:
        for key, value in written.items():
            typer.echo(f"{key:<12}{value}")


@app.command()
def simulate(
    plan: Path = typer.Argument(..., help="Plan file (JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: <plan name>_results next to the plan)."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Solver grid spacing in mm (overrides the plan)."),
    layout: str = typer.Option("nested", "--layout",
                               help="Solver grid: 'nested' boxes of cells (default, fewer cells) or one 'rectilinear' grid."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run a plan's freeze protocol and write temperature fields and a summary."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from planner.simulation import run_plan, write_outputs

    out = out or plan.with_name(f"{plan.stem}_results")
    progress_bar = Progress(
        TextColumn("solving"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )
    with progress_bar:
        task = progress_bar.add_task("solve", total=1.0)
        run = run_plan(plan, plan_path=plan, spacing_mm=spacing, layout=layout,
                       progress=lambda fraction: progress_bar.update(task, completed=fraction))
    summary = write_outputs(run, out)
    if as_json:
        _print_json(summary)
        return
    typer.echo(_format_simulation_summary(summary, out))


def _format_simulation_summary(summary: dict, out: Path) -> str:
    """Human text for ``planner simulate``: isotherm volumes and extents at each snapshot."""
    plan = summary["plan"]
    lines = [
        f"{plan['name']}: {len(plan['probes'])} probe(s), {plan['protocol_duration_s']:g} s protocol, "
        f"solved in {summary['solve_time_s']:.1f} s",
        f"  method: {summary['method']}",
        f"  {summary['disclaimer']}",
    ]
    for snapshot in summary["snapshots"]:
        lines.append(f"  t = {snapshot['time_s']:g} s (coldest {snapshot['min_temperature_c']:.1f} degC)")
        for iso in snapshot["isotherms"]:
            if iso["volume_ml"] <= 0:
                lines.append(f"    {iso['level_c']:>5g} degC: none")
                continue
            lines.append(
                f"    {iso['level_c']:>5g} degC: {iso['volume_ml']:7.2f} ml, "
                f"{iso['along_mm']:.1f} mm along x {iso['across_mm']:.1f} mm across"
            )
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    lines.append(f"  written to {out}/")
    return "\n".join(lines)


@app.command()
def cases(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the case library: ready plans with teaching notes (open one with `planner serve NAME`)."""
    from planner.cases import cases_table, list_cases

    library = list_cases()
    if as_json:
        _print_json([case.to_dict() for case in library])
    else:
        typer.echo("\n".join(cases_table(library)))


@app.command()
def export(
    inputs: list[Path] = typer.Argument(..., help="Plan files and folders of plans (case names work too)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    views: str = typer.Option("3d,axial,coronal,sagittal,probe", "--views",
                              help="Comma-separated views: 3d, axial, coronal, sagittal, probe."),
    times: str = typer.Option("end", "--times", help="'end', 'all', or seconds such as '120,300'."),
    size: str = typer.Option("1600x1200", "--size", help="Picture size WIDTHxHEIGHT in pixels."),
    workers: int = typer.Option(1, "--workers", help="Plans exported at once (worker processes)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="Dask: 'local-dask' or a scheduler address (tcp://host:8786)."),
    force: bool = typer.Option(False, "--force", help="Redo plans whose outputs are already complete."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Solver grid spacing in mm (overrides plans)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Render plans headless: pictures, HTML reports, isotherm surfaces, NIfTI maps, metrics CSV."""
    from planner.export.batch import export_plans

    report = export_plans(
        [_resolve_plan_input(path) for path in inputs], out, views=views, times=times, size=size,
        workers=workers, scheduler=scheduler, force=force, progress=not as_json, spacing_mm=spacing,
    )
    if as_json:
        _print_json(report.to_dict())
    else:
        typer.echo("\n".join(report.describe()))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _resolve_plan_input(path: Path) -> Path:
    """A case-library name stands for its plan file; paths are kept as they are."""
    if path.exists():
        return path
    from planner.cases import case_path

    try:
        return case_path(str(path))
    except InputError:
        return path  # the exporter reports the missing file with the other plans


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cryoplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """cryoplan command line."""


def _add_plugin_commands() -> None:
    """Add the commands other packages register in the ``cryoplan.commands`` entry-point
    group: the web app adds ``serve`` this way, so the core library never imports it."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="cryoplan.commands"):
        app.command(name=entry.name)(entry.load())


_add_plugin_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising (for tests and entry points)."""
    debug = os.environ.get("CRYOPLAN_DEBUG") == "1"
    try:
        # Standalone mode: typer reports usage errors itself (exit 2) and raises SystemExit.
        app(args=argv, prog_name="planner")
        return 0
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except InputError as error:
        if debug:
            raise
        typer.echo(f"planner: error: {_one_line(error)}", err=True)
        return 2
    except PlannerError as error:
        if debug:
            raise
        typer.echo(f"planner: error: {_one_line(error)}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("planner: interrupted", err=True)
        return 130
    except Exception as error:  # noqa: BLE001 - the CLI must never dump a traceback
        if debug:
            raise
        typer.echo(
            f"planner: internal error: {type(error).__name__}: {_one_line(error)} "
            "(set CRYOPLAN_DEBUG=1 for the traceback)",
            err=True,
        )
        return 1


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
