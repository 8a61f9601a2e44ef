"""Freeze and preview: run the bioheat solver (or the fast preview) off the UI, with
progress, cancel and the plan's metrics.

The solver (numba kernels that hold the GIL) runs in a separate worker process, so the
server's event loop keeps answering the browser while it works. The worker is started
once (spawned, not forked: the parent holds OpenGL contexts) and kept for later runs; it
reports progress through a pipe and polls a shared cancel flag between time steps.
The viewer keeps two: one for full freezes, one for previews while probes move (a
preview's first use of a probe model runs the solver once to build its table).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback

PROGRESS_EVERY = 0.01
"""Send progress when it has moved by at least this fraction."""


def _metrics_or_error(result, labels, nerves, vessels):
    """:class:`planner.metrics.PlanMetrics` of ``result``, or the one-line reason it failed."""
    from planner.errors import PlannerError
    from planner.metrics import compute_metrics

    try:
        return compute_metrics(result, labels=labels, nerves=list(nerves), vessels=vessels)
    except PlannerError as error:
        return f"metrics: {error}".splitlines()[0]
    except Exception as error:  # the picture is still worth showing
        return f"metrics failed: {error!r}".splitlines()[0]


def _worker_main(connection, cancel_event) -> None:  # pragma: no cover - runs in the child process
    """The worker's loop.

    Receives ``(kind, job, plan_json, labels, spacing_mm, vessels)`` with ``kind`` ``"run"``
    (the full solver) or ``"preview"`` (:func:`planner.thermal.preview.preview_ice_ball`,
    approximate). Replies ``("progress", job, fraction)`` while computing, then
    ``("result", job, result)`` (a ThermalResult or PreviewResult), ``("metrics", job,
    PlanMetrics or message)`` and ``("done", job, None)``; or ``("cancelled", job, None)`` or
    ``("error", job, message)``. Metrics (seconds) are computed here, off the server's
    event loop, and skipped for a preview when a newer request is already waiting.
    """
    from planner.errors import PlannerError
    from planner.plan import placed_probes, plan_from_json, protocol_steps, snapshot_times
    from planner.simulation import BODY_TEMPERATURE_C, plan_tissue_properties
    from planner.thermal import simulate
    from planner.thermal.preview import preview_ice_ball
    from planner.thermal.solver import SimulationCancelled

    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        kind, job, plan_json, labels, spacing_mm, vessels = message
        cancel_event.clear()
        last = [-1.0]

        def progress(fraction, job=job):
            if fraction - last[0] >= PROGRESS_EVERY or fraction >= 1.0:
                last[0] = fraction
                connection.send(("progress", job, float(fraction)))

        try:
            plan = plan_from_json(plan_json, source="plan")
            properties, homogeneous = plan_tissue_properties(plan)
            common = dict(properties=properties, tissue=homogeneous,
                          tissue_labels=labels if homogeneous is None else None,
                          body_temperature=BODY_TEMPERATURE_C, progress=progress, cancel=cancel_event.is_set)
            if kind == "preview":
                result = preview_ice_ball(placed_probes(plan), protocol_steps(plan), levels=tuple(plan.isotherms_c),
                                          **common)
            else:
                result = simulate(placed_probes(plan), protocol_steps(plan), spacing_mm=spacing_mm,
                                  snapshot_times=snapshot_times(plan), thresholds=tuple(plan.isotherms_c), **common)
            connection.send(("result", job, result))
            if kind == "preview" and connection.poll():
                metrics = "metrics skipped: the probes moved again"
            else:
                metrics = _metrics_or_error(result, labels, plan.nerves, vessels)
            connection.send(("metrics", job, metrics))
            connection.send(("done", job, None))
        except SimulationCancelled:
            connection.send(("cancelled", job, None))
        except PlannerError as error:
            connection.send(("error", job, str(error)))
        except Exception as error:  # report, keep the worker alive for the next run
            connection.send(("error", job, f"solver failed: {error!r}\n{traceback.format_exc(limit=3)}"))


class SolverWorker:
    """A solver process kept alive between runs.

    >>> worker = SolverWorker()
    >>> job = worker.submit(plan_json, labels, spacing_mm=1.0)       # or kind="preview"
    >>> for kind, job_id, payload in worker.poll(): ...      # non-blocking
    >>> worker.cancel()
    """

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._connection = None
        self._cancel = self._context.Event()
        self._lock = threading.Lock()
        self._job = 0
        self.running_job: int | None = None

    @property
    def busy(self) -> bool:
        return self.running_job is not None

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker_main, args=(child, self._cancel), daemon=True,
                                              name="cryoplan-solver")
        self._process.start()
        self._connection = parent

    def start(self) -> None:
        """Start the process now (it takes a second or two to import the solver)."""
        with self._lock:
            self._ensure_started()

    def submit(self, plan_json: str, labels, *, spacing_mm: float | None = None, kind: str = "run",
               vessels=None) -> int:
        """Queue a job: ``kind`` ``"run"`` (the full solver on a grid of ``spacing_mm``) or
        ``"preview"`` (the fast approximation); ``vessels`` (demo centrelines) are used by the
        metrics. Returns the job number. One job at a time: submit while one runs raises
        RuntimeError."""
        with self._lock:
            if self.running_job is not None:
                raise RuntimeError("a freeze is already running")
            self._ensure_started()
            self._job += 1
            self._cancel.clear()
            self.running_job = self._job
            self._connection.send((kind, self._job, plan_json, labels, spacing_mm, vessels))
            return self._job

    def cancel(self) -> None:
        """Ask the running job to stop (it answers ``"cancelled"`` within a time step)."""
        self._cancel.set()

    def poll(self) -> list[tuple]:
        """Messages that have arrived, without waiting. A worker that died is reported as an
        ``"error"`` for the running job (and restarted on the next submit)."""
        messages = []
        with self._lock:
            if self._connection is None:
                return messages
            try:
                while self._connection.poll():
                    message = self._connection.recv()
                    messages.append(message)
                    if message[0] in ("done", "cancelled", "error"):
                        self.running_job = None
            except (EOFError, OSError):
                pass
            if self.running_job is not None and not self._process.is_alive():
                messages.append(("error", self.running_job, "the solver process stopped unexpectedly"))
                self.running_job = None
                self._process = None
        return messages

    def wait(self, timeout_s: float = 600.0) -> list[tuple]:
        """Block until the running job ends (for scripts and tests); returns all its messages."""
        deadline = time.monotonic() + timeout_s
        collected = []
        while time.monotonic() < deadline:
            collected += self.poll()
            if self.running_job is None:
                return collected
            time.sleep(0.05)
        raise TimeoutError("the freeze did not finish in time")

    def close(self) -> None:
        """Stop the worker process."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                try:
                    self._connection.send(("stop",))
                except OSError:
                    pass
                self._process.join(timeout=2)
                if self._process.is_alive():
                    self._process.terminate()
            self._process = None


def run_export(plan_path: str, out_dir: str, spacing_mm: float | None) -> dict:
    """Export one saved plan with :func:`planner.export.export_plans` (run in a worker
    process: it solves and renders) and zip its folder for download.

    Returns
    -------
    dict
        ``status`` ("ok", "skipped" or "failed"), ``message``, ``lines`` (the export's
        description), ``slug``, ``report`` (path of ``report.html`` relative to ``out_dir``),
        ``zip`` (relative path of the zipped plan folder) and ``images`` (relative PNG paths).
    """
    import os
    import zipfile
    from pathlib import Path

    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from planner.export import export_plans

    out = Path(out_dir)
    report = export_plans([plan_path], out, times="end", size="1200x900", force=True, spacing_mm=spacing_mm)
    outcome = report.outcomes[0]
    answer = {"status": outcome.status, "message": outcome.message, "lines": report.describe(),
              "slug": outcome.slug, "report": None, "zip": None, "images": []}
    if outcome.status == "failed":
        return answer
    folder = out / outcome.slug
    answer["report"] = f"{outcome.slug}/report.html" if (folder / "report.html").is_file() else None
    answer["images"] = sorted(path.relative_to(out).as_posix() for path in folder.rglob("*.png"))
    archive = out / f"{outcome.slug}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(out).as_posix())
    answer["zip"] = archive.name
    return answer
