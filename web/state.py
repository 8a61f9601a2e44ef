"""The planning session: what is loaded, placed and computed (plain Python, no trame).

One :class:`Session` per server process. Every browser tab connected to the server
shows and edits the same session (trame keeps one state per server and pushes each
change to every connected tab): two tabs are two windows on one plan, by design. All
changes run on the server's event loop, one at a time, so tabs cannot interleave a
half-done edit; the solver runs in its own process and only hands back a finished result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.plan import (
    DemoVolume,
    Plan,
    PlanNerve,
    PlanProbe,
    PlanStep,
    TissueSpec,
    VolumeFile,
    plan_from_json,
    plan_to_json,
    resolve_probe,
    volume_sha256,
)

DEFAULT_PROTOCOL = (PlanStep("freeze", 120.0), PlanStep("passive_thaw", 60.0), PlanStep("freeze", 120.0))
"""Cryoneurolysis default: two freezes of 2 minutes with a passive thaw between."""
DEFAULT_PROBE_MODEL = "n2o-14g"
STEP_KINDS = ("freeze", "passive_thaw", "active_thaw")


@dataclass(eq=False)
class Session:
    """Everything the viewer shows.

    Attributes
    ----------
    title : str
        What is loaded, for the toolbar.
    volume : Volume or None
        The image (CT, ultrasound, ...); None for an empty session.
    labels : Volume or None
        Tissue label map used for surfaces, trajectory checks and the solver.
    volume_ref : DemoVolume, Path or None
        Where the image came from: a demo case or a file (absolute path inside a data folder).
    tissue : TissueSpec
        How the solver gets tissue properties.
    probes : list of PlanProbe
    nerves : list of planner.anatomy.Nerve
    vessels : list
        Demo vessel centrelines (display only).
    protocol : list of PlanStep
    crosshair : (3,) ndarray, mm
        World LPS point the three slices pass through.
    result : ThermalResult or None
        The last finished freeze; ``result_key`` is the plan it was computed for.
    result_metrics : PlanMetrics, str or None
        :func:`planner.metrics.compute_metrics` of ``result`` (a str says why there are none).
    preview : PreviewResult or None
        The fast, APPROXIMATE ice ball of the probes as placed (``preview_key``), shown
        while no full result matches the plan; ``preview_metrics`` its metrics.
    """

    title: str = "nothing loaded"
    description: str = ""
    volume: object = None
    labels: object = None
    volume_ref: object = None
    tissue: TissueSpec = field(default_factory=lambda: TissueSpec("homogeneous", tissue_class="muscle"))
    probes: list = field(default_factory=list)
    nerves: list = field(default_factory=list)
    vessels: list = field(default_factory=list)
    protocol: list = field(default_factory=lambda: list(DEFAULT_PROTOCOL))
    isotherms_c: tuple = (0.0, -20.0, -40.0)
    crosshair: np.ndarray = field(default_factory=lambda: np.zeros(3))
    result: object = None
    result_key: str = ""
    result_metrics: object = None
    preview: object = None
    preview_key: str = ""
    preview_metrics: object = None
    plan_name: str = "plan"
    snapshot_every_s: float = 30.0
    revision: int = 0

    # ------------------------------------------------------------ loading
    def clear_result(self) -> None:
        self.result = None
        self.result_key = ""
        self.result_metrics = None
        self.preview = None
        self.preview_key = ""
        self.preview_metrics = None

    def _reset(self) -> None:
        self.probes, self.nerves, self.vessels = [], [], []
        self.protocol = list(DEFAULT_PROTOCOL)
        self.clear_result()
        self.revision += 1

    def load_demo(self, name: str) -> None:
        """The built-in demo case ``name``: CT, labels, nerves, vessels; crosshair on the target."""
        from planner.anatomy import Nerve
        from planner.demo import build_demo_case

        case = build_demo_case(name)
        self._reset()
        self.title = f"demo: {case.title}"
        self.description = case.description
        self.volume, self.labels = case.ct, case.labels
        self.volume_ref = DemoVolume(case.name)
        self.tissue = TissueSpec("labels")
        self.nerves = [Nerve.from_plan(line) for line in case.nerves]
        self.vessels = list(case.vessels)
        self.plan_name = f"{case.name}_plan"
        target = case.landmarks.get("target_nerve_point")
        self.crosshair = np.asarray(target if target is not None else self.volume.bounds_world().mean(axis=0), float)

    def load_volume_file(self, path: Path) -> None:
        """An image file or DICOM folder; tissue from HU for CT, soft tissue under the skin for
        ultrasound, homogeneous muscle otherwise."""
        from planner.imaging import read_volume

        volume = read_volume(path)
        labels, tissue = self._labels_for(volume)
        self._reset()
        self.title = f"file: {Path(path).name}"
        self.description = repr(volume)
        self.volume, self.labels, self.tissue = volume, labels, tissue
        self.volume_ref = Path(path)
        self.plan_name = f"{Path(path).name.split('.')[0]}_plan"
        self.crosshair = volume.bounds_world().mean(axis=0)

    @staticmethod
    def _labels_for(volume):
        if volume.modality == "CT":
            from planner.tissue_map import tissue_from_ct

            return tissue_from_ct(volume), TissueSpec("ct_hu")
        if volume.modality == "US":
            try:
                from planner.anatomy import tissue_for_ultrasound

                return tissue_for_ultrasound(volume), TissueSpec("labels")
            except InputError:
                pass
        return None, TissueSpec("homogeneous", tissue_class="muscle")

    def load_plan(self, plan: Plan, plan_path: Path | None) -> None:
        """A plan: its volume (demo or file next to the plan), probes, nerves and protocol."""
        from planner.anatomy import Nerve
        from planner.plan import resolve_plan_path

        if isinstance(plan.volume, DemoVolume):
            self.load_demo(plan.volume.demo)
        elif isinstance(plan.volume, VolumeFile):
            if plan_path is None:
                raise InputError("volume.path: a plan with an image file must be opened from its data folder")
            self.load_volume_file(resolve_plan_path(plan_path, plan.volume.path))
        else:
            self._reset()
            self.volume = self.labels = self.volume_ref = None
            self.title = "homogeneous block"
        self.tissue = plan.tissue if plan.volume is not None or plan.tissue.source == "homogeneous" else self.tissue
        self.probes = list(plan.probes)
        if plan.nerves:
            self.nerves = [Nerve.from_plan(nerve) for nerve in plan.nerves]
        self.protocol = list(plan.protocol)
        self.isotherms_c = tuple(plan.isotherms_c)
        self.plan_name = plan.name
        if plan.description:
            self.description = plan.description
        if self.probes:
            self.crosshair = np.asarray(self.probes[0].tip, dtype=float)
        self.title = f"plan: {plan.name}"
        self.revision += 1

    # ------------------------------------------------------------ the plan
    def to_plan(self, *, plan_folder: Path | None = None) -> Plan:
        """The session as a :class:`Plan`; an image file is referenced relative to
        ``plan_folder`` (absolute without one) with its sha256."""
        import os

        volume = None
        if isinstance(self.volume_ref, DemoVolume):
            volume = self.volume_ref
        elif isinstance(self.volume_ref, Path):
            path = self.volume_ref
            text = os.path.relpath(path, plan_folder) if plan_folder is not None else str(path)
            volume = VolumeFile(Path(text).as_posix(), volume_sha256(path))
        return Plan(
            name=self.plan_name or "plan",
            tissue=self.tissue,
            probes=tuple(self.probes),
            protocol=tuple(self.protocol),
            volume=volume,
            description=self.description if isinstance(self.volume_ref, DemoVolume) else "",
            notes="Made in the cryoplan viewer. Research and education only. Not for clinical use.",
            nerves=tuple(nerve.to_plan() for nerve in self.nerves),
            isotherms_c=tuple(self.isotherms_c),
            snapshot_times_s=self.snapshot_times(),
        )

    def snapshot_times(self) -> tuple[float, ...]:
        """Every ``snapshot_every_s`` seconds and at the end of every step (s), for the time slider."""
        total = float(sum(step.duration_s for step in self.protocol))
        times = set(np.arange(self.snapshot_every_s, total + 1e-9, self.snapshot_every_s).round(6).tolist())
        elapsed = 0.0
        for step in self.protocol:
            elapsed += float(step.duration_s)
            times.add(round(elapsed, 6))
        return tuple(sorted(t for t in times if 0 < t <= total + 1e-9))

    def set_snapshot_every(self, seconds: float) -> None:
        """Snapshot interval for the time slider, s (1 to 600)."""
        if not np.isfinite(seconds) or not 1.0 <= seconds <= 600.0:
            raise InputError(f"snapshot interval: expected 1 to 600 s, got {seconds!r}")
        self.snapshot_every_s = float(seconds)

    def plan_key(self) -> str:
        """A fingerprint of what a freeze depends on (probes, protocol, tissue, image)."""
        ref = self.volume_ref.demo if isinstance(self.volume_ref, DemoVolume) else str(self.volume_ref)
        data = {
            "ref": ref,
            "tissue": repr(self.tissue),
            "probes": [repr(p) for p in self.probes],
            "protocol": [repr(s) for s in self.protocol],
            "snapshots": self.snapshot_times(),
        }
        return json.dumps(data, sort_keys=True)

    @property
    def result_is_current(self) -> bool:
        """True when the shown result was computed for the current probes and protocol."""
        return self.result is not None and self.result_key == self.plan_key()

    def shown_result(self) -> tuple[object, bool, object]:
        """What the views draw: ``(result, is_preview, metrics)``.

        The full result when it matches the plan; else a preview that matches it; else the
        last full result (stale: the metrics panel says so); else ``(None, False, None)``.
        """
        key = self.plan_key()
        if self.result is not None and self.result_key == key:
            return self.result, False, self.result_metrics
        if self.preview is not None and self.preview_key == key:
            return self.preview, True, self.preview_metrics
        if self.result is not None:
            return self.result, False, self.result_metrics
        return None, False, None

    # ------------------------------------------------------------ probes
    def probe_models(self) -> dict:
        from planner.catalog import load_probes

        return load_probes()

    def _new_probe_name(self) -> str:
        used = {p.name for p in self.probes}
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            if letter not in used:
                return letter
        return f"P{len(self.probes) + 1}"

    @staticmethod
    def _point(value, what: str) -> tuple[float, float, float]:
        try:
            point = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(f"{what}: expected 3 numbers x, y, z in mm, got {value!r}") from None
        if len(point) != 3 or not all(np.isfinite(point)):
            raise InputError(f"{what}: expected 3 finite numbers x, y, z in mm, got {value!r}")
        return point

    def add_probe(self, model: str, tip, entry) -> int:
        """Add a catalogue probe; returns its index."""
        models = self.probe_models()
        if model not in models:
            raise InputError(f"probe model {model!r}: not in the catalogue (known: {', '.join(models)})")
        tip, entry = self._point(tip, "tip"), self._point(entry, "entry")
        if np.linalg.norm(np.subtract(tip, entry)) < 1e-3:
            raise InputError("entry must differ from tip (it sets the shaft direction)")
        self.probes.append(PlanProbe(self._new_probe_name(), model, tip, entry))
        self.revision += 1
        return len(self.probes) - 1

    def _check_index(self, index: int) -> int:
        if not isinstance(index, int) or not 0 <= index < len(self.probes):
            raise InputError(f"probe {index!r}: no such probe")
        return index

    def set_probe(self, index: int, *, tip=None, entry=None, model: str | None = None) -> None:
        """Move a probe's tip and/or entry (world mm) or change its model."""
        index = self._check_index(index)
        probe = self.probes[index]
        tip = probe.tip if tip is None else self._point(tip, "tip")
        entry = probe.entry if entry is None else self._point(entry, "entry")
        if np.linalg.norm(np.subtract(tip, entry)) < 1e-3:
            raise InputError("entry must differ from tip (it sets the shaft direction)")
        if model is not None and model not in self.probe_models():
            raise InputError(f"probe model {model!r}: not in the catalogue")
        self.probes[index] = dataclasses.replace(probe, tip=tip, entry=entry, model=model or probe.model)
        self.revision += 1

    def nudge_probe(self, index: int, offset_mm) -> None:
        """Move a whole probe (tip and entry) by ``offset_mm`` (3,) world mm."""
        index = self._check_index(index)
        offset = np.asarray(self._point(offset_mm, "offset"))
        probe = self.probes[index]
        self.set_probe(index, tip=np.add(probe.tip, offset), entry=np.add(probe.entry, offset))

    def advance_probe(self, index: int, distance_mm: float) -> None:
        """Push the tip ``distance_mm`` further along the shaft (negative: pull back)."""
        index = self._check_index(index)
        probe = self.probes[index]
        axis = np.subtract(probe.tip, probe.entry)
        axis = axis / np.linalg.norm(axis)
        self.set_probe(index, tip=np.add(probe.tip, float(distance_mm) * axis))

    def delete_probe(self, index: int) -> None:
        index = self._check_index(index)
        del self.probes[index]
        self.revision += 1

    def placed_probes(self) -> list:
        """The probes as :class:`planner.thermal.probes.PlacedProbe` (geometry for drawing)."""
        plan = Plan(name="view", tissue=TissueSpec("homogeneous", tissue_class="muscle"), probes=tuple(self.probes),
                    protocol=(PlanStep("freeze", 1.0),))
        return [resolve_probe(plan, i) for i in range(len(self.probes))]

    def probe_warnings(self, index: int) -> list[str]:
        """Trajectory warnings of one probe in plain words (needs a tissue map)."""
        if self.labels is None:
            return []
        from planner.anatomy import check_trajectory

        probe = self.placed_probes()[index]
        warnings = check_trajectory(probe.tip, probe.entry, self.labels, nerves=self.nerves,
                                    probe_diameter_mm=probe.diameter_mm, probe_name=probe.name)
        return [warning.message for warning in warnings]

    # ------------------------------------------------------------ nerves
    def add_nerve(self, points, *, radius_mm: float, name: str = "", target: bool = True) -> None:
        """A nerve through clicked points (world mm)."""
        from planner.anatomy import nerve_from_polyline

        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or len(points) < 2:
            raise InputError("a traced nerve needs at least two points")
        name = name.strip() or f"nerve {len(self.nerves) + 1}"
        self.nerves.append(nerve_from_polyline(points, float(radius_mm), name=name, target=target))
        self.revision += 1

    def nerves_from_labels(self) -> int:
        """Replace the nerves with those found in the label map; returns how many."""
        from planner.anatomy import nerves_from_labels

        if self.labels is None:
            raise InputError("no label map loaded: nerves can only be traced by clicking")
        self.nerves = nerves_from_labels(self.labels, target=True)
        self.revision += 1
        return len(self.nerves)

    def update_nerve(self, index: int, *, name: str | None = None, radius_mm: float | None = None) -> None:
        if not 0 <= index < len(self.nerves):
            raise InputError(f"nerve {index!r}: no such nerve")
        nerve = self.nerves[index]
        changes = {}
        if name is not None and name.strip():
            changes["name"] = name.strip()
        if radius_mm is not None:
            if not np.isfinite(radius_mm) or radius_mm <= 0:
                raise InputError(f"nerve radius: must be > 0 mm, got {radius_mm!r}")
            changes["radius_mm"] = float(radius_mm)
            changes["radii_mm"] = None
        self.nerves[index] = dataclasses.replace(nerve, **changes)
        self.revision += 1

    def delete_nerve(self, index: int) -> None:
        if not 0 <= index < len(self.nerves):
            raise InputError(f"nerve {index!r}: no such nerve")
        del self.nerves[index]
        self.revision += 1

    # ------------------------------------------------------------ protocol
    def set_protocol(self, steps) -> None:
        """Replace the protocol by ``[(kind, duration_s), ...]``."""
        new = []
        for index, (kind, duration) in enumerate(steps):
            if kind not in STEP_KINDS:
                raise InputError(f"protocol[{index}].kind: expected one of {', '.join(STEP_KINDS)}, got {kind!r}")
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise InputError(f"protocol[{index}].duration_s: expected seconds, got {duration!r}") from None
            if not np.isfinite(duration) or duration <= 0:
                raise InputError(f"protocol[{index}].duration_s: must be > 0 s, got {duration!r}")
            new.append(PlanStep(kind, duration))
        if not any(step.kind == "freeze" for step in new):
            raise InputError("protocol: needs at least one freeze step")
        self.protocol = new
        self.revision += 1


def plan_text(session: Session, *, plan_folder: Path | None = None) -> str:
    """The session's plan as JSON text (what "download plan" gives)."""
    return plan_to_json(session.to_plan(plan_folder=plan_folder))


def parse_plan_text(text: str, *, source: str) -> Plan:
    """A plan from uploaded JSON text (validated; InputError naming ``source``)."""
    return plan_from_json(text, source=source)
