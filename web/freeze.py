"""Freeze: run the bioheat solver off the UI, with progress and cancel.

The solver (numba kernels that hold the GIL) runs in a separate worker process, so the
server's event loop keeps answering the browser while it works. The worker is started
once (spawned, not forked: the parent holds OpenGL contexts) and kept for later runs; it
reports progress through a pipe and polls a shared cancel flag between time steps.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback

PROGRESS_EVERY = 0.01
"""Send progress when it has moved by at least this fraction."""


def _worker_main(connection, cancel_event) -> None:  # pragma: no cover - runs in the child process
    """The worker's loop: receive ``("run", job, plan_json, labels, spacing_mm)``, reply with
    ``("progress", job, fraction)`` messages then ``("done", job, result)``,
    ``("cancelled", job, None)`` or ``("error", job, message)``."""
    from planner.errors import PlannerError
    from planner.plan import placed_probes, plan_from_json, protocol_steps, snapshot_times
    from planner.simulation import BODY_TEMPERATURE_C, plan_tissue_properties
    from planner.thermal import simulate
    from planner.thermal.solver import SimulationCancelled

    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        _, job, plan_json, labels, spacing_mm = message
        cancel_event.clear()
        last = [-1.0]

        def progress(fraction, job=job):
            if fraction - last[0] >= PROGRESS_EVERY or fraction >= 1.0:
                last[0] = fraction
                connection.send(("progress", job, float(fraction)))

        try:
            plan = plan_from_json(plan_json, source="plan")
            properties, homogeneous = plan_tissue_properties(plan)
            result = simulate(
                placed_probes(plan),
                protocol_steps(plan),
                tissue_labels=labels if homogeneous is None else None,
                tissue=homogeneous,
                properties=properties,
                spacing_mm=spacing_mm,
                snapshot_times=snapshot_times(plan),
                thresholds=tuple(plan.isotherms_c),
                body_temperature=BODY_TEMPERATURE_C,
                progress=progress,
                cancel=cancel_event.is_set,
            )
            connection.send(("done", job, result))
        except SimulationCancelled:
            connection.send(("cancelled", job, None))
        except PlannerError as error:
            connection.send(("error", job, str(error)))
        except Exception as error:  # report, keep the worker alive for the next run
            connection.send(("error", job, f"solver failed: {error!r}\n{traceback.format_exc(limit=3)}"))


class SolverWorker:
    """A solver process kept alive between runs.

    >>> worker = SolverWorker()
    >>> job = worker.submit(plan_json, labels, spacing_mm=1.0)
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

    def submit(self, plan_json: str, labels, *, spacing_mm: float | None) -> int:
        """Queue a run; returns its job number. Only one run at a time: submit while one runs
        raises RuntimeError."""
        with self._lock:
            if self.running_job is not None:
                raise RuntimeError("a freeze is already running")
            self._ensure_started()
            self._job += 1
            self._cancel.clear()
            self.running_job = self._job
            self._connection.send(("run", self._job, plan_json, labels, spacing_mm))
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
