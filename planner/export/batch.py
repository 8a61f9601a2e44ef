"""Export many plans: pictures, reports and data per plan, in parallel, resumable.

:func:`export_plans` is the whole ``planner export`` command: it finds the plan files,
skips those whose outputs are complete and current, runs the others (in this process,
in worker processes, or on a Dask cluster), and writes the run's index page, comparison
table and manifest. One plan failing is reported and the others go on.

Output layout (``OUT`` the output folder, ``<plan>`` the plan file's name without
``.json``)::

    OUT/index.html                       comparison of all plans, links to the reports
    OUT/comparison.csv                   the same table as CSV
    OUT/manifest.json                    every file: plan, view, time, sha256
    OUT/<plan>/report.html               the plan's report (pictures linked beside it)
    OUT/<plan>/images/<view>_<t>s.png    pictures
    OUT/<plan>/growth.svg                isotherm volume against time
    OUT/<plan>/metrics.csv, metrics.json
    OUT/<plan>/data/isotherm_<level>C_<t>s.stl|.vtp, min_temperature.nii.gz,
                    isotherm_<level>C_labels.nii.gz
    OUT/<plan>/export.json               the plan's record, written last (resume)

Research and education only; not for clinical use.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from planner import NOT_FOR_CLINICAL_USE, __version__
from planner.errors import InputError
from planner.export import manifest as mf
from planner.export.settings import ExportSettings, make_settings, resolve_times

LOCAL_DASK = "local-dask"
"""``scheduler`` value that starts a Dask cluster of local processes."""
DASK_CONNECT_TIMEOUT_S = 20.0
"""How long to try reaching a Dask scheduler by address, s."""
PNG_COMPRESS_LEVEL = 4
STATUSES = ("ok", "skipped", "failed")


# ============================================================================ results
@dataclass
class PlanOutcome:
    """What happened to one plan.

    Attributes
    ----------
    plan_path : Path
        The plan file.
    slug : str
        Its folder under the output folder.
    status : {"ok", "skipped", "failed"}
        Exported now, skipped because its outputs are current, or failed.
    message : str
        Why it failed (one line), or a note.
    plan_name, plan_sha256 : str
        From the plan (empty when it could not be read).
    files : list of dict
        Manifest entries of its files (paths relative to the output folder).
    seconds : float
        Wall time spent on it in this run, s.
    record : dict or None
        Its export record (:mod:`planner.export.manifest`), for ok and skipped plans.
    """

    plan_path: Path
    slug: str
    status: str
    message: str = ""
    plan_name: str = ""
    plan_sha256: str = ""
    files: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    record: dict | None = None

    @property
    def images(self) -> int:
        """Number of pictures."""
        return sum(1 for entry in self.files if entry.get("kind") == "image")

    def to_dict(self) -> dict:
        """JSON-ready summary (no file list)."""
        return {
            "plan_path": str(self.plan_path),
            "slug": self.slug,
            "status": self.status,
            "message": self.message,
            "plan_name": self.plan_name,
            "plan_sha256": self.plan_sha256,
            "files": len(self.files),
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "report": f"{self.slug}/report.html" if self.record is not None else None,
        }


@dataclass
class ExportReport:
    """The outcome of :func:`export_plans`.

    Attributes
    ----------
    out_dir : Path
    outcomes : list of PlanOutcome
        One per plan, in input order.
    manifest_path, index_path, comparison_path : Path
        The run's files.
    seconds : float
        Wall time of the whole export, s.
    """

    out_dir: Path
    outcomes: list[PlanOutcome]
    manifest_path: Path
    index_path: Path
    comparison_path: Path
    seconds: float = 0.0

    def _with(self, status: str) -> list[PlanOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def ok(self) -> list[PlanOutcome]:
        return self._with("ok")

    @property
    def skipped(self) -> list[PlanOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[PlanOutcome]:
        return self._with("failed")

    @property
    def images(self) -> int:
        """Pictures rendered in this run (skipped plans not counted)."""
        return sum(outcome.images for outcome in self.ok)

    @property
    def exit_code(self) -> int:
        """0 when no plan failed, 1 otherwise."""
        return 1 if self.failed else 0

    def describe(self) -> list[str]:
        """Lines for people: one per plan, then a summary (failures say why)."""
        lines = []
        for outcome in self.outcomes:
            if outcome.status == "ok":
                lines.append(f"exported  {outcome.slug}: {outcome.images} pictures, {len(outcome.files)} files "
                             f"({outcome.seconds:.1f} s)")
            elif outcome.status == "skipped":
                lines.append(f"skipped   {outcome.slug}: outputs up to date (use --force to redo)")
            else:
                lines.append(f"FAILED    {outcome.slug}: {outcome.message}")
        lines.append(
            f"{len(self.outcomes)} plans: {len(self.ok)} exported, {len(self.skipped)} up to date, "
            f"{len(self.failed)} failed; {self.images} pictures in {self.seconds:.1f} s"
        )
        lines.append(f"index: {self.index_path}")
        lines.append(f"manifest: {self.manifest_path}")
        lines.append(NOT_FOR_CLINICAL_USE)
        return lines

    def to_dict(self) -> dict:
        """JSON-ready summary (for ``--json``)."""
        return {
            "disclaimer": NOT_FOR_CLINICAL_USE,
            "out_dir": str(self.out_dir),
            "index": str(self.index_path),
            "manifest": str(self.manifest_path),
            "comparison": str(self.comparison_path),
            "exit_code": self.exit_code,
            "counts": {status: len(self._with(status)) for status in STATUSES},
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "plans": [outcome.to_dict() for outcome in self.outcomes],
        }


# ============================================================================ inputs
@dataclass(frozen=True)
class PlanTask:
    """One plan to export (picklable: sent to worker processes and Dask workers).

    ``threads``: the CPU threads the worker may use for the solver and the renderer
    (None: no limit set).
    """

    plan_path: str
    slug: str
    out_dir: str
    settings: ExportSettings
    force: bool = False
    threads: int | None = None


def find_plans(inputs: Sequence, *, out_dir=None, keep_missing: bool = False) -> list[Path]:
    """The plan files named by ``inputs``: files as given, folders' ``*.json`` files (not
    recursive, sorted by name). Files inside ``out_dir`` are left out; repeats once.

    ``keep_missing``: an input that does not exist is kept in the list (the export then
    reports it as a failed plan with the others) instead of raising.

    Raises
    ------
    InputError
        An input that does not exist (unless ``keep_missing``), or no plan file at all.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(out_dir).resolve() if out_dir is not None else None
    plans, seen = [], set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(p for p in path.glob("*.json") if p.is_file())
        elif path.is_file() or keep_missing:
            candidates = [path]
        else:
            raise InputError(f"{path}: no such plan file or folder")
        for candidate in candidates:
            resolved = candidate.resolve()
            if out is not None and out in resolved.parents:
                continue
            if resolved not in seen:
                seen.add(resolved)
                plans.append(candidate)
    if not plans:
        names = ", ".join(str(Path(item)) for item in inputs) or "(nothing)"
        raise InputError(f"no plan files (*.json) in {names}")
    return plans


def plan_slugs(paths: Sequence[Path]) -> list[str]:
    """Folder names for plan files: the file name without ``.json``, characters other than
    letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``; repeats get ``-2``, ``-3``."""
    slugs, used = [], set()
    for path in paths:
        stem = Path(path).name
        if stem.lower().endswith(".json"):
            stem = stem[:-5]
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "plan"
        slug, count = base, 1
        while slug.lower() in used:
            count += 1
            slug = f"{base}-{count}"
        used.add(slug.lower())
        slugs.append(slug)
    return slugs


# ============================================================================ one plan
def _limit_threads(threads: int | None) -> None:
    """Cap the solver's and the software renderer's threads (before they load)."""
    if not threads:
        return
    value = str(max(1, int(threads)))
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = value
    os.environ.setdefault("LP_NUM_THREADS", value)  # Mesa llvmpipe
    os.environ.setdefault("OMP_NUM_THREADS", value)


def _offscreen_default() -> None:
    # Without a display, EGL renders off screen directly; naming it skips VTK's X probe.
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, InputError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _png_bytes(rgb: np.ndarray, *, title: str) -> bytes:
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Title", title)
    info.add_text("Software", f"cryoplan {__version__}")
    info.add_text("Disclaimer", NOT_FOR_CLINICAL_USE)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL,
                                                    pnginfo=info)
    return buffer.getvalue()


def _snapshot_indices(snapshot_times, times) -> dict[float, int]:
    known = np.asarray(snapshot_times, dtype=float)
    indices = {}
    for time_s in times:
        index = int(np.argmin(np.abs(known - time_s)))
        if abs(known[index] - time_s) > 1e-6 * max(1.0, abs(time_s)):
            raise InputError(f"--times {time_s:g} s: the solver kept no snapshot there")
        indices[float(time_s)] = index
    return indices


def _probe_rows(plan) -> list[dict]:
    from planner.plan import placed_probes

    rows = []
    for spec, probe in zip(plan.probes, placed_probes(plan)):
        boundary = probe.boundary
        if boundary.kind == "temperature":
            cooling = f"surface held at {boundary.freeze_temperature:g} degC"
        elif boundary.kind == "convective":
            cooling = (f"coolant {boundary.coolant_temperature:g} degC, "
                       f"h = {boundary.heat_transfer_coefficient:g} W/m2/K")
        else:
            cooling = f"{boundary.heat_flux_per_length:g} W/m extracted"
        rows.append({"name": spec.name, "model": spec.model, "tip": [float(v) for v in spec.tip],
                     "entry": [float(v) for v in spec.entry], "diameter_mm": float(probe.diameter_mm),
                     "active_length_mm": float(probe.active_length_mm), "boundary": cooling})
    return rows


def export_one_plan(task: PlanTask, *, progress: Callable[[float], None] | None = None) -> PlanOutcome:
    """Export one plan: pictures, data, report and record. Never raises for a bad plan:
    problems come back as a ``"failed"`` outcome with a one-line message.

    Parameters
    ----------
    task : PlanTask
    progress : callable(float), optional
        Called with the fraction done (0 to 1) as the plan advances.
    """
    _limit_threads(task.threads)
    _offscreen_default()
    started = time.perf_counter()
    out_dir = Path(task.out_dir)
    path = Path(task.plan_path)
    outcome = PlanOutcome(path, task.slug, "failed")
    try:
        from planner.plan import load_plan, plan_sha256

        plan = load_plan(path, check_files=False)  # run_plan checks the volume files
        outcome.plan_name, outcome.plan_sha256 = plan.name, plan_sha256(plan)
        settings = task.settings
        if not task.force:
            record = mf.finished_record(out_dir, task.slug, outcome.plan_sha256, settings.fingerprint())
            if record is not None:
                outcome.status, outcome.record, outcome.files = "skipped", record, list(record["files"])
                outcome.seconds = time.perf_counter() - started
                return outcome
        outcome.record = _export(plan, path, task, outcome, progress)
        outcome.files = list(outcome.record["files"])
        outcome.status = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one bad plan must not stop the rest: report it
        outcome.status, outcome.message, outcome.record = "failed", _one_line(error), None
        if isinstance(error, MemoryError):
            outcome.message = "out of memory while exporting this plan"
        try:  # its old record would claim outputs this run could not make
            mf.plan_record_path(out_dir, task.slug).unlink()
        except OSError:
            pass
    outcome.seconds = time.perf_counter() - started
    return outcome


def _export(plan, path: Path, task: PlanTask, outcome: PlanOutcome, progress) -> dict:
    """Run the plan and write everything; returns its record."""
    from planner.export import data, report
    from planner.export.screenshots import Scene3D, header_height_px, phase_at, plan_scene, render_view
    from planner.plan import format_json, plan_to_dict, snapshot_times
    from planner.simulation import run_plan

    settings = task.settings
    out_dir = Path(task.out_dir)
    slug = task.slug
    folder = out_dir / slug
    notify = progress or (lambda fraction: None)
    old_record = mf.read_json(mf.plan_record_path(out_dir, slug))

    times = resolve_times(settings.times, snapshot_times(plan), plan.total_duration_s, source=str(path))
    wanted = tuple(sorted(set(snapshot_times(plan)) | set(times)))
    run = run_plan(replace(plan, snapshot_times_s=wanted), plan_path=path, spacing_mm=settings.spacing_mm,
                   progress=lambda fraction: notify(0.6 * float(fraction)))
    result = run.result
    indices = _snapshot_indices(result.snapshot_times, times)
    levels = tuple(float(level) for level in plan.isotherms_c)

    for sub in ("", "images", "data"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    try:  # the record goes last: while the plan is being redone it is not "finished"
        mf.plan_record_path(out_dir, slug).unlink()
    except OSError:
        pass

    notes = list(run.notes)
    metrics, metrics_note = None, None
    try:
        from planner.metrics import compute_metrics
    except ImportError as error:  # metrics module missing from this installation
        metrics_note = f"metrics unavailable ({error})"
    else:
        metrics = compute_metrics(run).to_dict()
        # The metrics repeat the solver's notes ("solver: ..."): keep one copy.
        notes += [f"metrics: {note}" for note in metrics.get("notes", [])
                  if not (note.startswith("solver: ") and note[len("solver: "):] in run.notes)]
    if metrics_note:
        notes.append(metrics_note)

    files: list[dict] = []

    def add(relative: str, **facts) -> None:
        files.append(mf.file_entry(out_dir, f"{slug}/{relative}", plan=slug, plan_name=plan.name, **facts))

    # ---------------------------------------------------------------- pictures
    scene = plan_scene(run)
    width, height = settings.size
    total_pictures = max(len(settings.views) * len(times), 1)
    done = 0
    scene3d = None
    try:
        if "3d" in settings.views:
            scene3d = Scene3D(scene, (height - header_height_px(height), width))
        for time_s, index in indices.items():
            for view in settings.views:
                rgb, geometry = render_view(scene, view, index, size=settings.size, scene3d=scene3d)
                name = f"images/{view}_{data.time_tag(time_s)}.png"
                (folder / name).write_bytes(_png_bytes(rgb, title=f"{plan.name}: {view} at {time_s:g} s"))
                add(name, kind="image", view=view, time_s=time_s, format="png", size=[width, height],
                    geometry=geometry)
                done += 1
                notify(0.6 + 0.3 * done / total_pictures)
    finally:
        if scene3d is not None:
            scene3d.close()

    # ---------------------------------------------------------------- data
    surface_files, surface_notes = data.write_isotherm_surfaces(result, levels, indices, folder / "data")
    map_files, map_notes = data.write_temperature_maps(run, levels, folder / "data")
    notes += surface_notes + map_notes
    for entry in surface_files + map_files:
        facts = {key: value for key, value in entry.items() if key != "path"}
        add(f"data/{entry['path']}", **facts)
    sizes = data.isotherm_sizes(result, levels, indices)
    (folder / "metrics.csv").write_text(data.csv_text(data.metric_rows(metrics, sizes)), encoding="utf-8")
    add("metrics.csv", kind="metrics", format="csv")
    metrics_payload = {"disclaimer": NOT_FOR_CLINICAL_USE, "plan_name": plan.name, "plan_sha256": outcome.plan_sha256,
                       "metrics": metrics, "isotherm_sizes": sizes}
    (folder / "metrics.json").write_text(format_json(metrics_payload) + "\n", encoding="utf-8")
    add("metrics.json", kind="metrics", format="json")
    growth = report.growth_plot_svg(result.history, levels, plan.protocol)
    (folder / "growth.svg").write_text(growth + "\n", encoding="utf-8")
    add("growth.svg", kind="growth_plot", format="svg")
    notify(0.95)

    # ---------------------------------------------------------------- report and record
    nz, ny, nx = result.grid.shape
    record = {
        "format": mf.PLAN_RECORD_FORMAT,
        "disclaimer": NOT_FOR_CLINICAL_USE,
        "cryoplan_version": __version__,
        "slug": slug,
        "plan": {
            "name": plan.name,
            "file_name": path.name,
            "path": str(path),
            "sha256": outcome.plan_sha256,
            "description": plan.description,
            "params": plan_to_dict(plan),
            "probes_resolved": _probe_rows(plan),
        },
        "settings": settings.fingerprint(),
        "times": [{"time_s": t, "phase": phase_at(plan.protocol, t)} for t in indices],
        "solver": {"method": result.method, "steps": int(result.steps), "spacing_mm": float(result.grid.spacing),
                   "cells_xyz": [nx, ny, nz], "solve_s": round(float(result.run_time_s), 3)},
        "metrics": metrics,
        "metrics_note": metrics_note,
        "isotherm_sizes": sizes,
        "summary": report.summarise(run, metrics),
        "maps_geometry": map_files[0]["geometry"] if map_files else None,
        "notes": notes,
        "files": files,
    }
    html = report.plan_report_html(record, growth_svg=growth)
    (folder / "report.html").write_text(html, encoding="utf-8")
    add("report.html", kind="report", format="html")
    mf.write_json_atomic(mf.plan_record_path(out_dir, slug), record)
    mf.remove_stale_files(out_dir, old_record, {entry["path"] for entry in files})
    notify(1.0)
    return record


# ============================================================================ many plans
class _Reporter:
    """Progress for people (a rich bar on stderr) or for a callback."""

    def __init__(self, progress, total: int) -> None:
        self.callback = progress if callable(progress) else None
        self.total = total
        self.done = 0
        self.bar = None
        self.task = None
        if progress is True:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("exporting", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def fraction(self, slug: str, value: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done + min(max(value, 0.0), 0.999),
                            description=f"exporting {slug}")

    def finished(self, outcome: PlanOutcome) -> None:
        self.done += 1
        if self.bar is not None:
            word = {"ok": "exported", "skipped": "up to date", "failed": "FAILED"}[outcome.status]
            self.bar.update(self.task, completed=self.done, description=f"{word} {outcome.slug}")
        if self.callback is not None:
            self.callback(outcome, self.done, self.total)


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"--{name}: expected a whole number >= 1, got {value!r}")
    return value


def _worker_init(threads: int) -> None:
    _limit_threads(threads)
    _offscreen_default()


def _run_local(tasks: list[PlanTask], workers: int, reporter: _Reporter) -> dict[str, PlanOutcome]:
    outcomes: dict[str, PlanOutcome] = {}
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            outcome = export_one_plan(task, progress=lambda f, slug=task.slug: reporter.fraction(slug, f))
            outcomes[task.slug] = outcome
            reporter.finished(outcome)
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (no forked VTK, numba or OpenGL state).
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(export_one_plan, replace(task, threads=threads)): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                outcome = PlanOutcome(Path(task.plan_path), task.slug, "failed",
                                      "a worker process stopped unexpectedly (out of memory or a crash); run again "
                                      "to retry this plan")
            except Exception as error:  # the task itself catches plan errors; this is the pool's
                outcome = PlanOutcome(Path(task.plan_path), task.slug, "failed", _one_line(error))
            outcomes[task.slug] = outcome
            reporter.finished(outcome)
    return outcomes


def _run_dask(tasks: list[PlanTask], workers: int, scheduler, reporter: _Reporter) -> dict[str, PlanOutcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("--scheduler: needs dask.distributed (pip install dask distributed)") from None
    own_client = own_cluster = None
    if isinstance(scheduler, Client):
        client = scheduler
    elif scheduler == LOCAL_DASK:
        own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = own_client = Client(own_cluster)
    else:
        try:
            client = own_client = Client(str(scheduler), timeout=f"{DASK_CONNECT_TIMEOUT_S:g}s")
        except (OSError, TimeoutError) as error:
            raise InputError(f"--scheduler: cannot reach the Dask scheduler at {scheduler}: {_one_line(error)}") from None
    outcomes: dict[str, PlanOutcome] = {}
    try:
        n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
        threads = max(1, (os.cpu_count() or 1) // min(n_workers, workers)) if own_cluster is not None else None
        futures = {}
        for task in tasks:
            future = client.submit(export_one_plan, replace(task, threads=threads), pure=False,
                                   key=f"cryoplan-export-{task.slug}-{os.getpid()}-{time.monotonic_ns()}")
            futures[future] = task
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # a lost worker, a scheduler error
                outcome = PlanOutcome(Path(task.plan_path), task.slug, "failed", f"Dask: {_one_line(error)}")
            outcomes[task.slug] = outcome
            reporter.finished(outcome)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return outcomes


def export_plans(
    inputs: Sequence,
    out_dir,
    *,
    views="3d,axial,coronal,sagittal,probe",
    times="end",
    size="1600x1200",
    workers: int = 1,
    scheduler=None,
    force: bool = False,
    progress: bool | Callable[[PlanOutcome, int, int], None] = False,
    spacing_mm: float | None = None,
) -> ExportReport:
    """Export plans: pictures, HTML reports, data files, an index page and a manifest.

    Parameters
    ----------
    inputs : sequence of str or Path
        Plan files and folders of plan files (``*.json``, not recursive).
    out_dir : str or Path
        Output folder (created).
    views : str or sequence of str
        ``"3d,axial,coronal,sagittal,probe"`` or a subset (see
        :data:`planner.export.settings.VIEWS`).
    times : str or sequence
        ``"end"``, ``"all"`` (the plan's snapshot times), or seconds (``"120,300"``);
        times that are not among a plan's snapshot times are added to its run.
    size : str or (int, int)
        Picture size ``"WIDTHxHEIGHT"`` px.
    workers : int
        Plans exported at once: 1 runs in this process; more start worker processes (or
        Dask workers with ``scheduler="local-dask"``).
    scheduler : str or distributed.Client, optional
        None: local processes. ``"local-dask"``: a Dask cluster of ``workers`` local
        processes. An address (``"tcp://host:8786"``): that Dask cluster, whose workers
        must see the plan files, their images and ``out_dir`` at the same paths. A
        ``distributed.Client``: used as it is.
    force : bool
        Redo plans whose outputs are complete and current.
    progress : bool or callable(outcome, done, total)
        True: a progress bar on stderr; a callable: called as each plan finishes.
    spacing_mm : float, optional
        Solver grid spacing for every plan, mm (default: each plan's, else the solver's).

    Returns
    -------
    ExportReport
        ``exit_code`` is 1 when any plan failed.

    Raises
    ------
    InputError
        Bad options, missing inputs, no plan files, or an output path that is a file.
    """
    started = time.perf_counter()
    settings = make_settings(views=views, times=times, size=size, spacing_mm=spacing_mm)
    workers = _check_count(workers, "workers")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out: {out_dir} is a file, not a folder")
    paths = find_plans(inputs, out_dir=out_dir, keep_missing=True)  # a missing one fails with the others
    out_dir.mkdir(parents=True, exist_ok=True)
    slugs = plan_slugs(paths)
    tasks = [PlanTask(str(path.resolve()), slug, str(out_dir.resolve()), settings, force)
             for path, slug in zip(paths, slugs)]
    with _Reporter(progress, len(tasks)) as reporter:
        # Up-to-date plans are skipped here, before any worker starts.
        pending, outcomes = [], {}
        for task in tasks:
            skipped = None if force else _already_done(task)
            if skipped is not None:
                outcomes[task.slug] = skipped
                reporter.finished(skipped)
            else:
                pending.append(task)
        if pending:
            if scheduler is None:
                outcomes.update(_run_local(pending, workers, reporter))
            else:
                outcomes.update(_run_dask(pending, workers, scheduler, reporter))
    ordered = []
    for path, task in zip(paths, tasks):
        outcome = outcomes[task.slug]
        outcome.plan_path = path  # as the user named it, in messages too
        outcome.message = outcome.message.replace(task.plan_path, str(path))
        ordered.append(outcome)
    report = _write_run_files(out_dir, ordered, settings)
    report.seconds = time.perf_counter() - started
    return report


def _already_done(task: PlanTask) -> PlanOutcome | None:
    """A ``"skipped"`` outcome when the plan's outputs are complete and current."""
    from planner.plan import load_plan, plan_sha256

    started = time.perf_counter()
    try:
        plan = load_plan(task.plan_path, check_files=False)
    except InputError:
        return None  # the export reports it
    sha = plan_sha256(plan)
    record = mf.finished_record(Path(task.out_dir), task.slug, sha, task.settings.fingerprint())
    if record is None:
        return None
    return PlanOutcome(Path(task.plan_path), task.slug, "skipped", plan_name=plan.name, plan_sha256=sha,
                       files=list(record["files"]), record=record, seconds=time.perf_counter() - started)


def _write_run_files(out_dir: Path, outcomes: list[PlanOutcome], settings: ExportSettings) -> ExportReport:
    from planner.export import data, report

    entries = [{"slug": o.slug, "status": o.status, "message": o.message, "plan_file": str(o.plan_path),
                "name": o.plan_name, "record": o.record} for o in outcomes]
    index_path = mf.write_text_atomic(out_dir / "index.html", report.index_html(entries, settings.fingerprint()))
    comparison_path = mf.write_text_atomic(
        out_dir / "comparison.csv", data.csv_text(report.comparison_rows(entries), columns=report.COMPARISON_COLUMNS))
    files = []
    for outcome in outcomes:
        for entry in outcome.files:
            files.append({key: entry.get(key) for key in mf.FILE_KEYS} | (
                {"geometry": entry["geometry"]} if "geometry" in entry else {}))
    for path, kind, fmt in ((index_path, "index", "html"), (comparison_path, "comparison", "csv")):
        files.append(mf.file_entry(out_dir, path.name, plan=None, plan_name=None, kind=kind, view=None, time_s=None,
                                   level_c=None, format=fmt))
    plans = [{"slug": o.slug, "plan_file": str(o.plan_path), "name": o.plan_name, "sha256": o.plan_sha256,
              "status": o.status, "message": o.message,
              "report": f"{o.slug}/report.html" if o.record is not None else None} for o in outcomes]
    manifest_path = mf.write_json_atomic(out_dir / mf.MANIFEST_NAME,
                                         mf.run_manifest(settings.fingerprint(), plans, files))
    return ExportReport(out_dir, outcomes, manifest_path, index_path, comparison_path)
