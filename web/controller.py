"""What the buttons do: trame state <-> :class:`web.state.Session`, views and the solver.

Every handler turns browser input into a session change, then refreshes what depends on
it. Errors the user can fix (:class:`planner.errors.PlannerError`) become a message in
the page; the session stays as it was.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import numpy as np

from planner.errors import InputError, PlannerError
from planner.scene import palette
from web.files import file_kind
from web.state import STEP_KINDS, parse_plan_text, plan_text

LOG = logging.getLogger("cryoplan.web")
PLAY_INTERVAL_S = 0.6
FREEZE_POLL_S = 0.15
GRID_CHOICES = {"coarse (1 mm, fast)": 1.0, "standard (solver's choice)": None, "fine (0.4 mm)": 0.4}


def _fmt(point) -> str:
    return ", ".join(f"{float(v):.1f}" for v in point)


def user_errors(handler):
    """Show a PlannerError (or a bad number) as the page's error message instead of failing."""

    @functools.wraps(handler)
    def wrapper(self, *args, **kwargs):
        try:
            return handler(self, *args, **kwargs)
        except (PlannerError, ValueError) as error:
            LOG.info("user error: %s", error)
            self.state.error = str(error).splitlines()[0]
            return None

    return wrapper


class Controller:
    """Binds a session, its views, the data folders and the solver worker to a trame server."""

    def __init__(self, server, session, views, folders, worker, preview_worker=None) -> None:
        self.server = server
        self.state = server.state
        self.ctrl = server.controller
        self.session = session
        self.views = views
        self.folders = folders
        self.worker = worker
        self.preview_worker = preview_worker
        self._play_task = None
        self._freeze_task = None
        self._preview_task = None
        self._preview_again = False
        self._export_task = None

    # ------------------------------------------------------------ state
    def declare_state(self) -> None:
        """Every state variable the page uses, with its first value (one place)."""
        from planner.catalog import load_probes
        from planner.demo import list_demo_cases

        s = self.state
        s.note = palette.NOTE
        s.title = self.session.title
        s.description = self.session.description
        s.error = ""
        s.info = ""
        s.cases = list_demo_cases()
        s.window_presets = list(palette.WINDOW_PRESETS)
        s.window_preset = "soft tissue"
        s.window_width = 400.0
        s.window_level = 40.0
        s.volume_presets = ["off", *palette.VOLUME_PRESETS]
        s.volume_preset = "off"
        s.tissue_keys = []
        s.visible_tissues = list(self.views.visible_tissues)
        s.crosshair_text = ""
        for name in ("axial", "coronal", "sagittal", "probe"):
            s[f"slice_{name}"] = ""
        s.click_mode = "crosshair"
        s.probe_models = [{"title": model.label, "value": key} for key, model in load_probes().items()]
        s.new_model = "n2o-14g"
        for key in ("tip_x", "tip_y", "tip_z", "entry_x", "entry_y", "entry_z"):
            s[key] = ""
        s.probes = []
        s.selected_probe = None
        s.nerves = []
        s.trace_count = 0
        s.new_nerve_name = ""
        s.new_nerve_radius = 1.0
        s.protocol = []
        s.step_kinds = list(STEP_KINDS)
        s.snapshot_every = self.session.snapshot_every_s
        s.grid_choices = list(GRID_CHOICES)
        s.grid_choice = "coarse (1 mm, fast)"
        s.freeze_running = False
        s.freeze_progress = 0
        s.freeze_status = "no freeze computed yet"
        s.snapshot_count = 0
        s.snapshot_index = 0
        s.snapshot_label = ""
        s.playing = False
        s.metrics = []
        s.metrics_heading = ""
        s.shown_kind = ""
        s.shown_label = ""
        s.shown_caveat = ""
        s.preview_status = ""
        s.export_running = False
        s.export_status = ""
        s.export_files = []
        s.legend = [{"text": text, "color": palette.to_hex(color)} for text, color in palette.legend_entries()]
        s.files = self.folders.listing()
        s.file_choice = None
        s.upload = None
        s.plan_name = self.session.plan_name
        s.can_save = self.folders.writable is not None

        s.change("window_preset")(self.on_window_preset)
        s.change("window_width", "window_level")(self.on_window_numbers)
        s.change("volume_preset")(self.on_volume_preset)
        s.change("visible_tissues")(self.on_visible_tissues)
        s.change("snapshot_index")(self.on_snapshot)
        s.change("upload")(self.on_upload)
        s.change("selected_probe")(self.on_selected_probe)
        self.ctrl.focus_probe = self.focus_probe

    # ------------------------------------------------------------ refresh
    def push_3d(self) -> None:
        self.ctrl.view_update()

    def refresh_slices(self, names=("axial", "coronal", "sagittal", "probe")) -> None:
        """Redraw the named slice pictures (the probe view does not depend on the crosshair)."""
        for name in names:
            self.state[f"slice_{name}"] = self.views.slice_url(name)
        self.state.crosshair_text = _fmt(self.session.crosshair)

    def refresh_probes(self) -> None:
        rows = []
        for index, probe in enumerate(self.session.probes):
            try:
                warnings = self.session.probe_warnings(index)
            except PlannerError as error:
                warnings = [str(error)]
            rows.append({"index": index, "name": probe.name, "model": probe.model, "tip": _fmt(probe.tip),
                         "entry": _fmt(probe.entry), "warnings": warnings})
        self.state.probes = rows

    def refresh_nerves(self) -> None:
        self.state.nerves = [
            {"index": i, "name": n.name, "radius": round(float(n.radius_mm), 2), "target": bool(n.target),
             "length": round(float(n.length_mm), 1)}
            for i, n in enumerate(self.session.nerves)
        ]
        self.state.trace_count = len(self.views.trace_points)

    def refresh_protocol(self) -> None:
        self.state.protocol = [{"kind": s.kind, "duration": float(s.duration_s)} for s in self.session.protocol]

    def refresh_result(self) -> None:
        """Time slider, the label of what the views show (full result or preview) and the metrics."""
        session = self.session
        s = self.state
        result = session.result
        if result is None:
            s.snapshot_count, s.snapshot_index, s.snapshot_label = 0, 0, ""
        else:
            s.snapshot_count = len(result.snapshot_times)
            index = self.views.snapshot % len(result.snapshot_times)
            s.snapshot_label = f"t = {result.snapshot_times[index]:.0f} s"
        shown, is_preview, metrics = session.shown_result()
        if shown is None:
            s.shown_kind, s.shown_label, s.shown_caveat = "", "", ""
        elif is_preview:
            s.shown_kind = "preview"
            s.shown_label = "PREVIEW (approximation): the lowest temperature each point would reach"
            s.shown_caveat = str(getattr(shown, "caveat", "")).strip()
        else:
            s.shown_kind = "full"
            stale = "" if session.result_is_current else " (probes or protocol changed since: run it again)"
            s.shown_label = f"full simulation at {s.snapshot_label}{stale}"
            s.shown_caveat = ""
        s.metrics_heading, s.metrics = self.metrics(shown, is_preview, metrics)

    def metrics(self, shown, is_preview: bool, metrics) -> tuple[str, list[dict]]:
        """``(heading, rows)`` for the metrics panel: :func:`planner.metrics.compute_metrics`
        lines (computed in the worker process, once per result) in plain words, plus the ice
        volumes at the slider's time for a full result. Rows are ``{"text", "kind"}`` with
        kind ``"fact"``, ``"warning"`` or ``"note"``."""
        if shown is None:
            return "", []
        rows = []
        if is_preview:
            heading = ("PREVIEW (approximation), before the full run: lowest temperature each point would reach "
                       "over the whole protocol")
        else:
            heading = "Full simulation: lowest temperature each point reached over the whole run"
            if not self.session.result_is_current:
                rows.append({"text": "probes or protocol changed since this freeze: run it again", "kind": "warning"})
        if metrics is None:
            rows.append({"text": "measuring nerve coverage and margins...", "kind": "note"})
        elif isinstance(metrics, str):
            rows.append({"text": metrics, "kind": "note"})
        else:
            for line in metrics.describe():
                text = line.replace("degC", "\N{DEGREE SIGN}C")
                if text.startswith("WARNING: "):
                    rows.append({"text": text[len("WARNING: "):], "kind": "warning"})
                elif text.startswith("note: "):
                    if not text.startswith("note: APPROXIMATE"):  # the caveat is shown once, under the heading
                        rows.append({"text": text[len("note: "):], "kind": "note"})
                else:
                    rows.append({"text": text, "kind": "fact"})
        # Warnings first (what needs attention), then the facts, then how they were measured.
        order = {"warning": 0, "fact": 1, "note": 2}
        rows.sort(key=lambda row: order[row["kind"]])
        if not is_preview:
            snapshot = self.views.snapshot % len(shown.snapshot_times)
            volumes = ", ".join(f"{level:g} \N{DEGREE SIGN}C {shown.isotherm_volume_ml(level, snapshot):.2f} ml"
                                for level in self.session.isotherms_c)
            rows.insert(0, {"text": f"at t = {shown.snapshot_times[snapshot]:.0f} s (time slider): ice volumes "
                                    f"{volumes}", "kind": "fact"})
        return heading, rows

    def refresh_all(self) -> None:
        """After loading: every list, the 3D scene and the slices."""
        s = self.state
        s.title = self.session.title
        s.description = self.session.description
        s.plan_name = self.session.plan_name
        self.views.rebuild()
        s.tissue_keys = self.views.tissue_keys()
        window = self.views.window
        with s:
            s.window_preset = window.name if window.name in palette.WINDOW_PRESETS else None
            s.window_width, s.window_level = float(window.width), float(window.level)
        self.refresh_probes()
        self.refresh_nerves()
        self.refresh_protocol()
        self.refresh_result()
        self.refresh_slices()
        self.push_3d()
        self.ctrl.view_reset_camera()
        self.schedule_preview()

    # ------------------------------------------------------------ loading
    @user_errors
    def load_demo(self, name: str) -> None:
        self.state.error = ""
        self.session.load_demo(name)
        self.views.selected_probe = None
        self.views.trace_points = []
        self.state.selected_probe = None
        self.refresh_all()
        self.state.info = f"loaded demo case {name}"

    @user_errors
    def open_file(self, choice: str | None = None) -> None:
        choice = choice if choice is not None else self.state.file_choice
        if not choice:
            raise InputError("choose a file first")
        self.state.error = ""
        path = self.folders.resolve(choice)
        self._open_path(path)

    def _open_path(self, path) -> None:
        kind = file_kind(path.name) if path.is_file() else "volume"
        if kind == "plan":
            from planner.plan import load_plan

            plan = load_plan(path)
            self.session.load_plan(plan, path)
        else:
            self.session.load_volume_file(path)
        self.views.selected_probe = 0 if self.session.probes else None
        self.views.trace_points = []
        self.state.selected_probe = self.views.selected_probe
        self.refresh_all()
        self.state.info = f"opened {path.name}"

    @user_errors
    def on_upload(self, upload=None, **_) -> None:
        if not upload:
            return
        from trame.app.file_upload import ClientFile

        uploaded = ClientFile(upload[0] if isinstance(upload, list) else upload)
        self.state.error = ""
        name = uploaded.name or "upload"
        content = uploaded.content or b""
        try:
            kind = file_kind(name)
            if kind is None:
                raise InputError(f"{name}: not a plan (.json) or an image ({', '.join(('.nii.gz', '.nrrd', '.mha', '.vti', '.inv3'))})")
            if kind == "plan" and self.folders.writable is None:
                try:
                    text = content.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{name}: not UTF-8 text") from None
                plan = parse_plan_text(text, source=name)
                self.session.load_plan(plan, None)
                self.views.selected_probe = 0 if self.session.probes else None
                self.refresh_all()
            else:
                path = self.folders.store_upload(name, content)
                try:
                    self._open_path(path)
                except PlannerError:
                    path.unlink(missing_ok=True)  # keep the folder free of files that do not open
                    raise
                self.state.files = self.folders.listing()
            self.state.info = f"opened upload {name}"
        finally:
            self.state.upload = None

    # ------------------------------------------------------------ plan files
    def plan_json(self) -> str:
        """Trigger: the plan as JSON text, for download."""
        self.session.plan_name = (self.state.plan_name or "plan").strip() or "plan"
        return plan_text(self.session, plan_folder=None)

    @user_errors
    def save_plan(self, plan_name: str | None = None) -> None:
        """Save into ``<data folder>/plans/``; ``plan_name`` as the page sends it with the click
        (the state's may lag behind the last keystrokes)."""
        from planner.plan import save_plan

        self.state.error = ""
        if isinstance(plan_name, str):
            self.state.plan_name = plan_name
        self.session.plan_name = (self.state.plan_name or "plan").strip() or "plan"
        path = self.folders.plan_path(self.session.plan_name)
        save_plan(self.session.to_plan(plan_folder=path.parent), path)
        self.state.files = self.folders.listing()
        self.state.info = f"saved {path.relative_to(self.folders.writable).as_posix()}"

    # ------------------------------------------------------------ report export
    @user_errors
    def start_export(self, plan_name: str | None = None) -> None:
        """Save the plan, then export it (solve, pictures, HTML report) in a worker process
        into ``<data folder>/exports/``; the page offers the files for download."""
        if self.state.export_running:
            return
        self.state.error = ""
        out_dir = self.folders.export_folder()
        self.save_plan(plan_name)
        if self.state.error:
            return
        path = self.folders.plan_path(self.session.plan_name)
        import concurrent.futures
        import multiprocessing

        from web.freeze import run_export

        executor = concurrent.futures.ProcessPoolExecutor(max_workers=1,
                                                          mp_context=multiprocessing.get_context("spawn"))
        future = executor.submit(run_export, str(path), str(out_dir), GRID_CHOICES.get(self.state.grid_choice))
        self.state.export_running = True
        self.state.export_files = []
        self.state.export_status = f"exporting {path.name} (solving and rendering)..."
        from trame.app import asynchronous

        self._export_task = asynchronous.create_task(self._follow_export(future, executor))

    async def _follow_export(self, future, executor) -> None:
        try:
            answer = await asyncio.wrap_future(future)
        except Exception as error:  # the worker died or the export raised
            answer = {"status": "failed", "message": str(error).splitlines()[0] if str(error) else repr(error)}
        finally:
            executor.shutdown(wait=False)
        with self.state:
            self.state.export_running = False
            if answer["status"] == "failed":
                self.state.export_status = f"export failed: {answer['message']}"
                self.state.error = self.state.export_status
                return
            files = []
            if answer.get("zip"):
                files.append({"title": "report with pictures (zip)", "path": answer["zip"], "name": answer["zip"],
                              "mime": "application/zip"})
            if answer.get("report"):
                files.append({"title": "report.html", "path": answer["report"], "name": "report.html",
                              "mime": "text/html"})
            for image in answer.get("images", []):
                files.append({"title": image.rsplit("/", 1)[-1], "path": image, "name": image.rsplit("/", 1)[-1],
                              "mime": "image/png"})
            self.state.export_files = files
            self.state.export_status = f"exported to exports/{answer['slug']}/ ({len(answer.get('images', []))} pictures)"

    def export_file(self, relative: str):
        """Trigger: the bytes of an exported file, as a binary attachment (None outside exports/)."""
        try:
            path = self.folders.export_file(relative)
        except InputError as error:
            self.state.error = str(error)
            return None
        return self.server.protocol.addAttachment(path.read_bytes())

    def screenshot(self, name: str):
        """Trigger: PNG bytes of a view (``"3d"`` or a slice name), as a binary attachment."""
        from planner.scene.slices import encode_png

        if name == "3d":
            content = self.views.screenshot_3d()
        else:
            picture = self.views.slice_picture(name)
            if picture is None:
                return None
            content = encode_png(picture[0], compress_level=6)
        return self.server.protocol.addAttachment(content)

    # ------------------------------------------------------------ views
    def on_window_preset(self, window_preset=None, **_) -> None:
        if window_preset in palette.WINDOW_PRESETS:
            preset = palette.WINDOW_PRESETS[window_preset]
            with self.state:
                self.state.window_width, self.state.window_level = preset.width, preset.level

    def on_window_numbers(self, window_width=None, window_level=None, **_) -> None:
        try:
            width, level = float(window_width), float(window_level)
        except (TypeError, ValueError):
            return
        if width <= 0:
            return
        from planner.scene.palette import WindowPreset

        self.views.window = WindowPreset(self.state.window_preset or "custom", width, level, "")
        self.refresh_slices()

    @user_errors
    def on_volume_preset(self, volume_preset=None, **_) -> None:
        self.views.set_volume_preset(volume_preset or "off")
        self.push_3d()

    def on_visible_tissues(self, visible_tissues=None, **_) -> None:
        self.views.set_visible_tissues(visible_tissues or [])
        self.push_3d()

    @user_errors
    def slice_click(self, name: str, x: float, y: float, width: float, height: float, mode: str | None = None,
                    natural_width: float = 0.0, natural_height: float = 0.0) -> None:
        """A click (or the end of a drag) at ``(x, y)`` px on a slice shown ``width`` x ``height``
        px; ``mode`` is the page's click mode, ``natural_*`` the picture's own size (0: it fills
        the box)."""
        point = self.views.click_to_world(name, x, y, width, height, natural_width_px=natural_width,
                                          natural_height_px=natural_height)
        if point is None:
            return
        self.state.error = ""
        if mode in ("crosshair", "tip", "entry", "nerve"):
            self.state.click_mode = mode
        mode = self.state.click_mode
        index = self.views.selected_probe
        if mode == "crosshair" or name == "probe" and mode not in ("tip", "entry"):
            if name != "probe":
                self.session.crosshair = np.asarray(point, dtype=float)
                self.refresh_slices(("axial", "coronal", "sagittal"))
            return
        elif mode in ("tip", "entry"):
            if index is None:
                for axis, value in zip("xyz", point):
                    self.state[f"{mode}_{axis}"] = f"{value:.1f}"
                self.state.info = f"{mode} set in the new-probe fields; press Add probe"
            else:
                self.session.set_probe(index, **{mode: point})
                self._probes_changed()
                return
        elif mode == "nerve":
            self.views.trace_points.append(np.asarray(point, dtype=float))
            self.views.update_nerves()
            self.refresh_nerves()
            self.push_3d()
        self.refresh_slices()

    def set_crosshair_text(self) -> None:
        try:
            values = [float(v) for v in str(self.state.crosshair_text).replace(",", " ").split()]
            if len(values) != 3:
                raise ValueError
        except ValueError:
            self.state.error = "crosshair: expected three numbers x, y, z in mm"
            return
        self.session.crosshair = np.asarray(values)
        self.refresh_slices(("axial", "coronal", "sagittal"))

    # ------------------------------------------------------------ probes
    def _probes_changed(self) -> None:
        self.views.update_probes()
        self.views.update_isotherms()
        self.refresh_probes()
        self.refresh_result()
        self.refresh_slices()
        self.push_3d()
        self.schedule_preview()

    # ------------------------------------------------------------ preview
    def schedule_preview(self) -> None:
        """Ask the preview worker for the probes as placed now (latest wins: a request made
        while one runs is sent when it ends). Needs the server's event loop."""
        if self.preview_worker is None:
            return
        session = self.session
        if not session.probes or session.result_is_current or self.state.freeze_running:
            self.state.preview_status = ""
            return
        if session.preview is not None and session.preview_key == session.plan_key():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not serving yet (a plan opened at start): on_server_ready asks again
            return
        if self.preview_worker.busy:
            self._preview_again = True
            return
        self._submit_preview()

    def _submit_preview(self) -> None:
        self._preview_again = False
        session = self.session
        labels = session.labels if session.tissue.source != "homogeneous" else None
        try:
            self.preview_worker.submit(plan_text(session), labels, kind="preview", vessels=list(session.vessels))
        except (PlannerError, RuntimeError) as error:
            self.state.preview_status = f"no preview: {error}".splitlines()[0]
            return
        self.state.preview_status = "preview: computing..."
        if self._preview_task is None or self._preview_task.done():
            from trame.app import asynchronous

            self._preview_task = asynchronous.create_task(self._follow_preview())
        self._preview_submitted_key = session.plan_key()

    async def _follow_preview(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_POLL_S / 2)
            key = getattr(self, "_preview_submitted_key", "")
            ended = False
            with self.state:
                for kind, _job, payload in self.preview_worker.poll():
                    if kind == "progress" and payload < 1.0:
                        self.state.preview_status = (
                            "preparing preview: first use of this probe model, protocol and tissue runs the solver "
                            f"once for its table (kept on disk after)... {100 * payload:.0f} %")
                    elif kind == "result" and key == self.session.plan_key():
                        self.session.preview, self.session.preview_key = payload, key
                        self.session.preview_metrics = None
                        self.state.preview_status = f"preview ready ({1000 * payload.run_time_s:.0f} ms)"
                        self._show_changed_result()
                    elif kind == "result":  # the probes or protocol changed meanwhile
                        self.state.preview_status = ""
                    elif kind == "metrics" and key == self.session.preview_key and payload is not None:
                        self.session.preview_metrics = payload
                        self.refresh_result()
                    elif kind in ("error", "cancelled"):
                        self.state.preview_status = f"no preview: {str(payload).splitlines()[0]}" if payload else ""
                    if kind in ("done", "error", "cancelled"):
                        ended = True
            if ended:
                if self._preview_again:
                    self.schedule_preview()
                    if self.preview_worker.busy:
                        continue
                return

    def _show_changed_result(self) -> None:
        self.views.update_isotherms()
        self.refresh_result()
        self.refresh_slices()
        self.push_3d()

    def _typed(self, prefix: str, numbers=None):
        values = []
        for i, axis in enumerate("xyz"):
            text = self.state[f"{prefix}_{axis}"] if numbers is None else numbers[i]
            self.state[f"{prefix}_{axis}"] = text
            try:
                values.append(float(text))
            except (TypeError, ValueError):
                raise InputError(f"{prefix} {axis}: expected a number of mm, got {text!r}") from None
        return values

    @user_errors
    def add_probe(self, *typed) -> None:
        """Add a probe at typed coordinates (``typed``: tip x, y, z, entry x, y, z, as the page
        sends them with the click; the state's fields when empty)."""
        self.state.error = ""
        tip = self._typed("tip", typed[:3] if typed else None)
        entry = self._typed("entry", typed[3:] if typed else None)
        index = self.session.add_probe(self.state.new_model, tip, entry)
        self.views.selected_probe = index
        with self.state:
            self.state.selected_probe = index
        self.session.crosshair = np.asarray(self.session.probes[index].tip, dtype=float)
        if len(self.session.probes) == 1:
            self.views.focus_probe(index)  # the first probe: look at where the ice will grow
        self._probes_changed()
        self.state.info = f"probe {self.session.probes[index].name} added"

    @user_errors
    def apply_typed(self, *typed) -> None:
        index = self.views.selected_probe
        if index is None:
            raise InputError("select a probe first (or press Add probe)")
        self.state.error = ""
        self.session.set_probe(index, tip=self._typed("tip", typed[:3] if typed else None),
                               entry=self._typed("entry", typed[3:] if typed else None))
        self._probes_changed()

    def on_selected_probe(self, selected_probe=None, **_) -> None:
        index = selected_probe if isinstance(selected_probe, int) and 0 <= selected_probe < len(self.session.probes) else None
        self.views.selected_probe = index
        if index is not None:
            probe = self.session.probes[index]
            for prefix, point in (("tip", probe.tip), ("entry", probe.entry)):
                for axis, value in zip("xyz", point):
                    self.state[f"{prefix}_{axis}"] = f"{value:.1f}"
        self.views.update_probes()
        self.refresh_slices()
        self.push_3d()

    def focus_probe(self) -> None:
        index = self.views.selected_probe if self.views.selected_probe is not None else 0
        self.views.focus_probe(index)
        self.push_3d()

    @user_errors
    def delete_probe(self, index: int) -> None:
        self.session.delete_probe(int(index))
        self.views.selected_probe = None
        with self.state:
            self.state.selected_probe = None
        self._probes_changed()

    @user_errors
    def nudge(self, axis: str, step_mm: float) -> None:
        index = self.views.selected_probe
        if index is None:
            raise InputError("select a probe to move")
        if axis == "shaft":
            self.session.advance_probe(index, float(step_mm))
        else:
            offset = np.zeros(3)
            offset["xyz".index(axis)] = float(step_mm)
            self.session.nudge_probe(index, offset)
        self.on_selected_probe(index)
        self._probes_changed()

    # ------------------------------------------------------------ nerves
    @user_errors
    def finish_nerve(self) -> None:
        self.session.add_nerve(self.views.trace_points, radius_mm=float(self.state.new_nerve_radius or 1.0),
                               name=self.state.new_nerve_name or "")
        self.views.trace_points = []
        self._nerves_changed()

    def clear_trace(self) -> None:
        self.views.trace_points = []
        self._nerves_changed()

    @user_errors
    def nerves_from_labels(self) -> None:
        count = self.session.nerves_from_labels()
        self.state.info = f"{count} nerve(s) found in the label map"
        self._nerves_changed()

    @user_errors
    def update_nerve(self, index: int, name: str, radius) -> None:
        self.session.update_nerve(int(index), name=name, radius_mm=float(radius))
        self._nerves_changed()

    @user_errors
    def delete_nerve(self, index: int) -> None:
        self.session.delete_nerve(int(index))
        self._nerves_changed()

    def _nerves_changed(self) -> None:
        self.views.update_nerves()
        self.refresh_nerves()
        self.refresh_probes()
        self.refresh_slices()
        self.push_3d()

    # ------------------------------------------------------------ protocol and freeze
    @user_errors
    def set_protocol(self, steps) -> None:
        try:
            self.session.set_protocol([(step["kind"], step["duration"]) for step in steps])
        finally:
            self.refresh_protocol()  # show the session's protocol (unchanged after a bad edit)
        self._show_changed_result()
        self.schedule_preview()

    @user_errors
    def edit_step(self, index: int, key: str, value) -> None:
        steps = [dict(step) for step in self.state.protocol]
        steps[int(index)][key] = value
        self.set_protocol(steps)

    @user_errors
    def set_snapshot_every(self, value) -> None:
        self.session.set_snapshot_every(float(value))
        self.state.snapshot_every = self.session.snapshot_every_s

    @user_errors
    def add_step(self) -> None:
        steps = list(self.state.protocol) + [{"kind": "freeze", "duration": 60.0}]
        self.set_protocol(steps)

    @user_errors
    def remove_step(self, index: int) -> None:
        steps = [step for i, step in enumerate(self.state.protocol) if i != int(index)]
        self.set_protocol(steps)

    @user_errors
    def start_freeze(self) -> None:
        if not self.session.probes:
            raise InputError("add a probe before running a freeze")
        self.state.error = ""
        spacing = GRID_CHOICES.get(self.state.grid_choice)
        labels = self.session.labels if self.session.tissue.source != "homogeneous" else None
        plan_json = plan_text(self.session)
        key = self.session.plan_key()
        self.worker.submit(plan_json, labels, spacing_mm=spacing, vessels=list(self.session.vessels))
        if self.preview_worker is not None:  # the full result replaces any preview: free the cores for it
            self._preview_again = False
            self.preview_worker.cancel()
            self.state.preview_status = ""
        self.state.freeze_running = True
        self.state.freeze_progress = 0
        self.state.freeze_status = "starting the solver..."
        from trame.app import asynchronous

        self._freeze_task = asynchronous.create_task(self._follow_freeze(key))

    def cancel_freeze(self) -> None:
        self.worker.cancel()
        self.state.freeze_status = "cancelling..."

    async def _follow_freeze(self, key: str) -> None:
        while True:
            await asyncio.sleep(FREEZE_POLL_S)
            messages = self.worker.poll()
            with self.state:
                for kind, _job, payload in messages:
                    if kind == "progress":
                        self.state.freeze_progress = round(100 * payload, 1)
                        self.state.freeze_status = f"freezing... {100 * payload:.0f} %"
                    elif kind == "result":
                        self.session.result = payload
                        self.session.result_key = key
                        self.session.result_metrics = None
                        self.views.new_result()
                        self.state.freeze_progress = 100
                        self.state.freeze_status = (f"done: {len(payload.snapshot_times)} snapshots, "
                                                    f"{payload.run_time_s:.1f} s of solver time; measuring...")
                        self.state.snapshot_index = len(payload.snapshot_times) - 1
                        self.refresh_result()
                        self.refresh_slices()
                        self.push_3d()
                    elif kind == "metrics":
                        if self.session.result_key == key:
                            self.session.result_metrics = payload
                            self.refresh_result()
                    elif kind == "done":
                        self.state.freeze_running = False
                        if self.session.result is not None:
                            self.state.freeze_status = (f"done: {len(self.session.result.snapshot_times)} snapshots, "
                                                        f"{self.session.result.run_time_s:.1f} s of solver time")
                    elif kind == "cancelled":
                        self.state.freeze_running = False
                        self.state.freeze_status = "cancelled"
                    elif kind == "error":
                        self.state.freeze_running = False
                        self.state.freeze_status = "failed"
                        self.state.error = str(payload).splitlines()[0]
                if not self.state.freeze_running:
                    return

    def on_snapshot(self, snapshot_index=None, **_) -> None:
        if self.session.result is None or snapshot_index is None:
            return
        count = len(self.session.result.snapshot_times)
        self.views.snapshot = int(snapshot_index) % count
        self.views.update_isotherms()
        self.refresh_result()
        self.refresh_slices()
        self.push_3d()

    def toggle_play(self) -> None:
        if self.state.playing:
            self.state.playing = False
            return
        if self.session.result is None:
            return
        self.state.playing = True
        from trame.app import asynchronous

        self._play_task = asynchronous.create_task(self._play())

    async def _play(self) -> None:
        count = len(self.session.result.snapshot_times)
        if self.state.snapshot_index >= count - 1:
            with self.state:
                self.state.snapshot_index = 0
        while self.state.playing and self.session.result is not None:
            await asyncio.sleep(PLAY_INTERVAL_S)
            with self.state:
                if self.state.snapshot_index >= count - 1:
                    self.state.playing = False
                    break
                self.state.snapshot_index = self.state.snapshot_index + 1
