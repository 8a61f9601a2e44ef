"""The plan file: what to freeze, with which probes, how, and what to report.

A plan is a versioned JSON document (``"format": "cryoplan.plan"``,
``"schema_version": 1``) that the browser app, the CLI and the tests share. In memory it
is a tree of frozen dataclasses (:class:`Plan` at the root). All coordinates are world
LPS millimetres, times seconds, temperatures degrees Celsius.

Layout (schema_version 1)::

    {
      "format": "cryoplan.plan", "schema_version": 1,
      "name": "...", "description": "...", "notes": "...",
      "volume": null                                  # homogeneous block, no image
              | {"path": "ct.nii.gz", "sha256": "<64 hex>", "series_uid": "..."}  # path relative to the plan file
              | {"demo": "intercostal"},              # built-in demo anatomy (planner.demo)
      "tissue": {"source": "homogeneous", "class": "muscle",
                 "overrides": {"muscle": {"perfusion": 0.001}}}
              | {"source": "labels", "labels": {"path": "...", "sha256": "...", "table": "generic"}}
                                                      # labels optional with a demo volume; table optional
              | {"source": "ct_hu"},
      "probes": [{"name": "A", "model": "n2o-16g", "tip": [x, y, z], "entry": [x, y, z]},
                 {"name": "B", "model": "custom", "tip": [...], "entry": [...],
                  "diameter_mm": 1.5, "active_length_mm": 8, "tip_offset_mm": 0,
                  "boundary": {"kind": "temperature", "freeze_temperature": -80, "cooldown_time": 5}}],
      "protocol": [{"kind": "freeze", "duration_s": 120, "probes": ["A", 1]},
                   {"kind": "active_thaw", "duration_s": 30, "thaw_temperature_c": 20}],
      "nerves": [{"name": "T5", "points": [[x, y, z], ...], "radius_mm": 1.0, "target": true}],
      "isotherms_c": [0, -20, -40],
      "snapshot_times_s": null,                       # null: the end of each step
      "grid": null | {"spacing_mm": 0.5}
    }

Loading validates everything and reports every problem at once, each with its JSON path
(``probes[1].tip: expected 3 numbers``), in one :class:`PlanValidationError` (an
:class:`~planner.errors.InputError`). Older layouts are migrated first (see
:data:`MIGRATIONS`). Saving is atomic: a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from planner.catalog import (
    _show,
    boundary_from_fields,
    check_number,
    is_number,
    load_probes,
    load_tissues,
    probe_geometry_problems,
    tissue_override_problems,
)
from planner.errors import InputError
from planner.labels import Tissue
from planner.thermal.probes import PlacedProbe, ProbeBoundary
from planner.thermal.protocol import STEP_KINDS, ProtocolStep

PLAN_FORMAT = "cryoplan.plan"
SCHEMA_VERSION = 1
PLAN_SUFFIX = ".json"
DEFAULT_ISOTHERMS_C = (0.0, -20.0, -40.0)
DEFAULT_THAW_TEMPERATURE_C = 20.0
BODY_TEMPERATURE_C = 37.0
TISSUE_SOURCES = ("homogeneous", "labels", "ct_hu")
CUSTOM_MODEL = "custom"
CUSTOM_PROBE_FIELDS = ("diameter_mm", "active_length_mm", "tip_offset_mm", "boundary")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_GRID_SPACING_MM = 10.0

Vec3 = tuple[float, float, float]


# ============================================================================ data
@dataclass(frozen=True)
class VolumeFile:
    """An image file or DICOM folder, and its content hash.

    ``path`` is relative to the plan file's folder (or absolute); ``sha256`` is
    :func:`volume_sha256` of it when the plan was made, so a changed file is noticed.
    """

    path: str
    sha256: str
    series_uid: str | None = None


@dataclass(frozen=True)
class DemoVolume:
    """The built-in demo anatomy called ``demo`` (``planner.demo.build_demo_case``)."""

    demo: str


@dataclass(frozen=True)
class LabelFile:
    """A label map file, its hash, and how its values become tissue classes.

    ``table`` names a table of ``data/label_tables.toml`` (``"cryoplan"``: the values are
    :class:`planner.labels.Tissue` values; ``"generic"``: classes from segment names;
    ``"totalsegmentator-like"``); None picks ``"generic"`` when the file names its
    values, else ``"cryoplan"`` (see :func:`planner.anatomy.tissues.tissue_from_label_file`).
    """

    path: str
    sha256: str
    table: str | None = None


@dataclass(frozen=True)
class TissueSpec:
    """Where tissue properties come from.

    Parameters
    ----------
    source : {"homogeneous", "labels", "ct_hu"}
        One tissue class everywhere; a label map (``labels``, or the demo's); or classes
        from the CT's Hounsfield units (:func:`planner.tissue_map.tissue_from_ct`).
    tissue_class : str, optional
        For ``"homogeneous"``: a catalogue key (``"muscle"``, ``"r98"``, ...). JSON key ``"class"``.
    labels : LabelFile, optional
        For ``"labels"`` with an image volume.
    overrides : mapping
        ``{class key: {TissueProperties field: value}}`` replacing catalogue values.
    """

    source: str
    tissue_class: str | None = None
    labels: LabelFile | None = None
    overrides: Mapping[str, Mapping[str, float | bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomProbe:
    """The numbers of a plan-defined probe (model ``"custom"``); mm and a boundary."""

    diameter_mm: float
    active_length_mm: float
    boundary: ProbeBoundary
    tip_offset_mm: float = 0.0


@dataclass(frozen=True)
class PlanProbe:
    """One probe of a plan.

    Parameters
    ----------
    name : str
        Label shown to the user; unique within the plan (protocol steps may use it).
    model : str
        Probe catalogue key, or ``"custom"`` with ``custom`` set.
    tip, entry : (3,) tuple of float
        World LPS mm of the physical tip and of the skin entry point.
    custom : CustomProbe, optional
        The probe's numbers when ``model == "custom"``.
    """

    name: str
    model: str
    tip: Vec3
    entry: Vec3
    custom: CustomProbe | None = None


@dataclass(frozen=True)
class PlanStep:
    """One protocol step as the plan file holds it.

    ``probes`` lists probe indices (int) or names (str) driven by the step; ``None``
    drives all. ``thaw_temperature_c`` applies to ``"active_thaw"`` steps.
    """

    kind: str
    duration_s: float
    probes: tuple[int | str, ...] | None = None
    thaw_temperature_c: float = DEFAULT_THAW_TEMPERATURE_C


@dataclass(frozen=True)
class PlanNerve:
    """A nerve traced as a polyline of world LPS mm points with a radius in mm.

    ``target``: True for the nerve to freeze (its cross-section must lie inside the
    -20 degC surface), False for one to spare.
    """

    name: str
    points: tuple[Vec3, ...]
    radius_mm: float
    target: bool = True


@dataclass(frozen=True)
class GridSpec:
    """Solver grid settings; ``spacing_mm`` None lets the solver choose."""

    spacing_mm: float | None = None


@dataclass(frozen=True)
class Plan:
    """A complete plan. See the module docstring for the JSON layout."""

    name: str
    tissue: TissueSpec
    probes: tuple[PlanProbe, ...]
    protocol: tuple[PlanStep, ...]
    volume: VolumeFile | DemoVolume | None = None
    description: str = ""
    notes: str = ""
    nerves: tuple[PlanNerve, ...] = ()
    isotherms_c: tuple[float, ...] = DEFAULT_ISOTHERMS_C
    snapshot_times_s: tuple[float, ...] | None = None
    grid: GridSpec | None = None

    @property
    def total_duration_s(self) -> float:
        """Sum of the protocol step durations, s."""
        return float(sum(step.duration_s for step in self.protocol))

    def probe_index(self, reference: int | str) -> int:
        """Index of the probe named ``reference`` (a str) or ``reference`` itself (an int)."""
        if isinstance(reference, int):
            return reference
        return [probe.name for probe in self.probes].index(reference)


class PlanValidationError(InputError):
    """A plan with one or more problems; ``problems`` lists them, each ``json.path: problem``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source}: {count}: " + "; ".join(problems))


# ============================================================================ migration
def _migrate_0_to_1(data: dict) -> dict:
    """Schema 0, the pre-release layout, to schema 1.

    Schema 0 (homogeneous tissue only, no image volume)::

        {"format": "cryoplan.plan", "schema_version": 0,
         "title": str, "comment": str,
         "tissue": "muscle",
         "probes": [{"label": str, "type": model, "tip_mm": [x, y, z], "entry_mm": [x, y, z]}],
         "cycles": [{"type": "freeze" | "thaw", "seconds": s}],   # "thaw" was passive
         "nerves": [{"name": str, "points_mm": [[x, y, z], ...], "radius_mm": r}],  # all targets
         "isotherms": [degC, ...]}

    Values are carried over unchecked; the schema 1 validator reports what is wrong.
    """
    renames = {"title": "name", "comment": "notes", "cycles": "protocol", "isotherms": "isotherms_c"}
    result = {"format": PLAN_FORMAT, "schema_version": 1, "volume": None}
    for key, value in data.items():
        if key in ("format", "schema_version"):
            continue
        result[renames.get(key, key)] = value
    tissue = data.get("tissue", "muscle")
    result["tissue"] = {"source": "homogeneous", "class": tissue}

    def convert(items, mapping, extra=None):
        if not isinstance(items, list):
            return items
        out = []
        for item in items:
            if isinstance(item, dict):
                item = {mapping.get(k, k): v for k, v in item.items()}
                if extra:
                    extra(item)
            out.append(item)
        return out

    if "probes" in data:
        probe_keys = {"label": "name", "type": "model", "tip_mm": "tip", "entry_mm": "entry"}
        result["probes"] = convert(data["probes"], probe_keys)

    def step_kind(item):
        if item.get("kind") == "thaw":
            item["kind"] = "passive_thaw"

    if "cycles" in data:
        result["protocol"] = convert(data["cycles"], {"type": "kind", "seconds": "duration_s"}, step_kind)

    def target(item):
        item.setdefault("target", True)

    if "nerves" in data:
        result["nerves"] = convert(data["nerves"], {"points_mm": "points"}, target)
    return result


MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_0_to_1}
"""``{old version: function}``; each function turns a plan dict of that schema version into
the next version. :func:`migrate_plan_dict` chains them up to :data:`SCHEMA_VERSION`."""


def migrate_plan_dict(data: dict) -> dict:
    """Bring a plan dict of any known schema version to :data:`SCHEMA_VERSION`.

    Raises
    ------
    InputError
        When the document is not a cryoplan plan, or its version is unknown or newer
        than this program reads.
    """
    if data.get("format") != PLAN_FORMAT:
        raise InputError(f'format: expected "{PLAN_FORMAT}", got {_show(data.get("format"))} (not a cryoplan plan)')
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"schema_version: expected an integer, got {_show(version)}")
    if version > SCHEMA_VERSION:
        raise InputError(
            f"schema_version: the plan was written by a newer cryoplan (schema {version}); "
            f"this one reads schemas up to {SCHEMA_VERSION}"
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise InputError(f"schema_version: no migration from schema {version}")
        data = MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    return data


# ============================================================================ parsing
class _Reader:
    """Collects every problem of a plan dict while turning it into dataclasses."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def obj(self, value, path: str, *, required=(), optional=()) -> dict | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected an object, got {_show(value)}")
            return None
        known = tuple(required) + tuple(optional)
        for key in value:
            if key not in known:
                self.problem(f"{path}.{key}" if path else key, f"unknown field (known: {', '.join(known)})")
        for key in required:
            if key not in value:
                self.problem(f"{path}.{key}" if path else key, "missing")
        return value

    def text(self, value, path: str, *, non_empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {_show(value)}")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.problem(path, "not valid Unicode text (lone surrogate)")
            return None
        if non_empty and not value.strip():
            self.problem(path, "must not be empty")
            return None
        return value

    def number(self, value, path: str, *, rule: str = "any", unit: str = "") -> float | None:
        count = len(self.problems)
        result = check_number(self.problems, path, value, rule=rule, unit=unit)
        return result if len(self.problems) == count else None

    def boolean(self, value, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {_show(value)}")
            return None
        return value

    def items(self, value, path: str, *, non_empty: bool = False, what: str = "item") -> list | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_show(value)}")
            return None
        if non_empty and not value:
            self.problem(path, f"needs at least one {what}")
        return value

    def vec3(self, value, path: str) -> Vec3 | None:
        if not isinstance(value, list) or len(value) != 3:
            self.problem(path, f"expected 3 numbers [x, y, z] in mm, got {_show(value)}")
            return None
        bad = [i for i, v in enumerate(value) if not is_number(v)]
        if bad:
            self.problem(path, f"expected 3 numbers [x, y, z] in mm, item {bad[0]} is {_show(value[bad[0]])}")
            return None
        return tuple(float(v) for v in value)


def _parse_volume(r: _Reader, value) -> VolumeFile | DemoVolume | None:
    if value is None:
        return None
    if isinstance(value, dict) and "demo" in value:
        data = r.obj(value, "volume", required=("demo",))
        name = r.text(data["demo"], "volume.demo", non_empty=True)
        if name is None:
            return None
        known = _demo_names()
        if known is not None and name not in known:
            r.problem("volume.demo", f"unknown demo case {name!r} (known: {', '.join(known)})")
            return None
        return DemoVolume(name)
    data = r.obj(value, "volume", required=("path", "sha256"), optional=("series_uid",))
    if data is None:
        return None
    path = r.text(data.get("path"), "volume.path", non_empty=True) if "path" in data else None
    digest = _parse_sha256(r, data.get("sha256"), "volume.sha256") if "sha256" in data else None
    series_uid = None
    if data.get("series_uid") is not None:
        series_uid = r.text(data["series_uid"], "volume.series_uid", non_empty=True)
    if path is None or digest is None:
        return None
    return VolumeFile(path, digest, series_uid)


def _demo_names() -> list[str] | None:
    """Names of the built-in demo cases, or None where the demo package is not installed."""
    try:
        from planner.demo import list_demo_cases
    except ImportError:
        return None
    return list_demo_cases()


def _label_table_names() -> list[str] | None:
    """Names of the label tables of ``data/label_tables.toml``, or None where the anatomy
    package is not installed."""
    try:
        from planner.anatomy.tissues import load_label_tables
    except ImportError:
        return None
    return list(load_label_tables())


def _parse_sha256(r: _Reader, value, path: str) -> str | None:
    text = r.text(value, path)
    if text is None:
        return None
    if not SHA256_PATTERN.fullmatch(text):
        r.problem(path, "expected 64 lower-case hexadecimal digits")
        return None
    return text


def _parse_tissue(r: _Reader, value, volume) -> TissueSpec | None:
    """``volume`` is the plan's raw ``"volume"`` value (checked separately)."""
    is_demo = isinstance(volume, dict) and "demo" in volume
    data = r.obj(value, "tissue", required=("source",), optional=("class", "labels", "overrides"))
    if data is None:
        return None
    source = data.get("source")
    if source not in TISSUE_SOURCES:
        r.problem("tissue.source", f"expected one of {', '.join(TISSUE_SOURCES)}, got {_show(source)}")
        return None
    catalogue = load_tissues()
    tissue_class = None
    if source == "homogeneous":
        if "class" not in data:
            r.problem("tissue.class", f"missing (a homogeneous block needs a tissue: {', '.join(catalogue)})")
            return None
        tissue_class = r.text(data["class"], "tissue.class")
        if tissue_class is not None and tissue_class not in catalogue:
            r.problem("tissue.class", f"unknown tissue {tissue_class!r} (known: {', '.join(catalogue)})")
            return None
    elif "class" in data:
        r.problem("tissue.class", f"only for a homogeneous block (source is {source!r})")

    labels = None
    if "labels" in data and data["labels"] is not None:
        if source != "labels":
            r.problem("tissue.labels", f"only for source 'labels' (source is {source!r})")
        else:
            ldata = r.obj(data["labels"], "tissue.labels", required=("path", "sha256"), optional=("table",))
            if ldata is not None and "path" in ldata and "sha256" in ldata:
                path = r.text(ldata["path"], "tissue.labels.path", non_empty=True)
                digest = _parse_sha256(r, ldata["sha256"], "tissue.labels.sha256")
                table, table_ok = None, True
                if ldata.get("table") is not None:
                    table = r.text(ldata["table"], "tissue.labels.table", non_empty=True)
                    known = _label_table_names()
                    if table is not None and known is not None and table not in known:
                        r.problem("tissue.labels.table", f"unknown label table {table!r} (known: {', '.join(known)})")
                    table_ok = table is not None and (known is None or table in known)
                if path is not None and digest is not None and table_ok:
                    labels = LabelFile(path, digest, table)
    if source == "labels" and data.get("labels") is None and not is_demo:
        r.problem("tissue.labels", "missing (source 'labels' needs a label map file unless the volume is a demo)")
    if source == "ct_hu" and volume is None:
        r.problem("tissue.source", "'ct_hu' needs a CT volume (volume is null)")

    overrides: dict[str, dict] = {}
    raw = data.get("overrides", {})
    if not isinstance(raw, dict):
        r.problem("tissue.overrides", f"expected an object {{tissue: {{field: value}}}}, got {_show(raw)}")
    else:
        class_keys = {t.key for t in Tissue if t is not Tissue.AIR}
        for key, fields in raw.items():
            where = f"tissue.overrides.{key}"
            if source == "homogeneous":
                if key != tissue_class:
                    r.problem(
                        where, f"the homogeneous block is {tissue_class!r}; overrides for other tissues have no effect"
                    )
                    continue
            elif key not in class_keys:
                r.problem(where, f"not a tissue class (known: {', '.join(sorted(class_keys))})")
                continue
            if key not in catalogue:
                r.problem(where, "not in the tissue catalogue")
                continue
            problems = tissue_override_problems(catalogue[key], fields, where)
            r.problems.extend(problems)
            if not problems:
                overrides[key] = {k: (v if isinstance(v, bool) else float(v)) for k, v in fields.items()}
    return TissueSpec(source, tissue_class, labels, overrides)


def _parse_probe(r: _Reader, value, path: str, models) -> PlanProbe | None:
    data = r.obj(value, path, required=("name", "model", "tip", "entry"), optional=CUSTOM_PROBE_FIELDS)
    if data is None:
        return None
    name = r.text(data.get("name"), f"{path}.name", non_empty=True) if "name" in data else None
    model = r.text(data.get("model"), f"{path}.model", non_empty=True) if "model" in data else None
    tip = r.vec3(data["tip"], f"{path}.tip") if "tip" in data else None
    entry = r.vec3(data["entry"], f"{path}.entry") if "entry" in data else None
    if tip is not None and entry is not None and math.dist(tip, entry) < 1e-6:
        r.problem(f"{path}.entry", "same point as the tip (the entry sets the shaft direction)")
        entry = None
    custom = None
    custom_fields = {k: data[k] for k in CUSTOM_PROBE_FIELDS if k in data}
    if model == CUSTOM_MODEL:
        problems = probe_geometry_problems(custom_fields, path, require_all=False)
        r.problems.extend(problems)
        if not problems:
            custom = CustomProbe(
                diameter_mm=float(custom_fields["diameter_mm"]),
                active_length_mm=float(custom_fields["active_length_mm"]),
                boundary=boundary_from_fields(custom_fields["boundary"]),
                tip_offset_mm=float(custom_fields.get("tip_offset_mm", 0.0)),
            )
    elif model is not None:
        if model not in models:
            r.problem(f"{path}.model", f"unknown probe model {model!r} (known: {', '.join(models)}, custom)")
        for key in custom_fields:
            r.problem(f"{path}.{key}", f"only for model 'custom' (model is {model!r})")
    if None in (name, model, tip, entry) or (model == CUSTOM_MODEL and custom is None):
        return None
    return PlanProbe(name, model, tip, entry, custom)


def _parse_step(r: _Reader, value, path: str) -> PlanStep | None:
    data = r.obj(value, path, required=("kind", "duration_s"), optional=("probes", "thaw_temperature_c"))
    if data is None:
        return None
    kind = data.get("kind")
    if "kind" in data and kind not in STEP_KINDS:
        r.problem(f"{path}.kind", f"expected one of {', '.join(STEP_KINDS)}, got {_show(kind)}")
        kind = None
    duration = None
    if "duration_s" in data:
        duration = r.number(data["duration_s"], f"{path}.duration_s", rule="positive", unit="s")
    thaw = DEFAULT_THAW_TEMPERATURE_C
    if "thaw_temperature_c" in data:
        thaw = r.number(data["thaw_temperature_c"], f"{path}.thaw_temperature_c", rule="temperature")
    probes = None
    if data.get("probes") is not None:
        items = r.items(data["probes"], f"{path}.probes")
        if items is not None:
            if not items:
                r.problem(f"{path}.probes", "empty; leave it out to drive all probes")
                items = None
            else:
                references = []
                for i, item in enumerate(items):
                    is_index = isinstance(item, int) and not isinstance(item, bool) and item >= 0
                    if not (is_index or isinstance(item, str)):
                        r.problem(
                            f"{path}.probes[{i}]", f"expected a probe index (0, 1, ...) or name, got {_show(item)}"
                        )
                    else:
                        references.append(item)
                probes = tuple(references) if len(references) == len(items) else None
                if probes is None:
                    items = None
        if items is None:
            return None
    if kind is None or duration is None or thaw is None:
        return None
    return PlanStep(kind, duration, probes, thaw)


def _parse_nerve(r: _Reader, value, path: str) -> PlanNerve | None:
    data = r.obj(value, path, required=("name", "points", "radius_mm"), optional=("target",))
    if data is None:
        return None
    name = r.text(data["name"], f"{path}.name", non_empty=True) if "name" in data else None
    points = None
    if "points" in data:
        items = r.items(data["points"], f"{path}.points")
        if items is not None:
            if len(items) < 2:
                r.problem(f"{path}.points", f"a nerve needs at least 2 points, got {len(items)}")
            else:
                parsed = [r.vec3(p, f"{path}.points[{i}]") for i, p in enumerate(items)]
                if all(p is not None for p in parsed):
                    points = tuple(parsed)
    radius = None
    if "radius_mm" in data:
        radius = r.number(data["radius_mm"], f"{path}.radius_mm", rule="positive", unit="mm")
    target = r.boolean(data["target"], f"{path}.target") if "target" in data else True
    if None in (name, points, radius, target):
        return None
    return PlanNerve(name, points, radius, target)


def _parse_number_list(r: _Reader, value, path: str, *, rule: str, unit: str) -> tuple[float, ...] | None:
    items = r.items(value, path, non_empty=True, what="value")
    if not items:
        return None
    numbers = [r.number(v, f"{path}[{i}]", rule=rule, unit=unit) for i, v in enumerate(items)]
    if any(v is None for v in numbers):
        return None
    return tuple(numbers)


def plan_from_dict(data, *, source: str = "plan") -> Plan:
    """Validate a plan dict (as parsed from JSON) and build a :class:`Plan`.

    Parameters
    ----------
    data : dict
        The JSON document; older schema versions are migrated first.
    source : str
        Names the document in error messages (the file path when loading a file).

    Raises
    ------
    PlanValidationError
        Listing every problem found, each as ``json.path: problem``.
    """
    if not isinstance(data, dict):
        raise PlanValidationError(source, [f"(document): expected a JSON object, got {_show(data)}"])
    try:
        data = migrate_plan_dict(dict(data))
    except InputError as error:
        raise PlanValidationError(source, [str(error)]) from None

    r = _Reader()
    top_required = ("format", "schema_version", "name", "tissue", "probes", "protocol")
    top_optional = ("description", "notes", "volume", "nerves", "isotherms_c", "snapshot_times_s", "grid")
    r.obj(data, "", required=top_required, optional=top_optional)

    name = r.text(data["name"], "name", non_empty=True) if "name" in data else None
    description = r.text(data.get("description", ""), "description")
    notes = r.text(data.get("notes", ""), "notes")
    volume = _parse_volume(r, data.get("volume"))
    tissue = _parse_tissue(r, data["tissue"], data.get("volume")) if "tissue" in data else None

    models = load_probes()
    probes = None
    raw_names = None  # probe names as written, for checking protocol references
    items = r.items(data["probes"], "probes", non_empty=True, what="probe") if "probes" in data else None
    if items is not None:
        parsed = [_parse_probe(r, p, f"probes[{i}]", models) for i, p in enumerate(items)]
        raw_names = [p.get("name") if isinstance(p, dict) else None for p in items]
        first_index: dict[str, int] = {}
        for i, probe_name in enumerate(raw_names):
            if not isinstance(probe_name, str):
                continue
            if probe_name in first_index:
                r.problem(
                    f"probes[{i}].name", f"duplicate probe name {probe_name!r} (also probes[{first_index[probe_name]}])"
                )
            else:
                first_index[probe_name] = i
        if all(p is not None for p in parsed):
            probes = tuple(parsed)

    protocol = None
    if "protocol" in data:
        items = r.items(data["protocol"], "protocol", non_empty=True, what="step")
        if items is not None:
            parsed_steps = [_parse_step(r, s, f"protocol[{i}]") for i, s in enumerate(items)]
            if raw_names is not None:
                for i, step in enumerate(parsed_steps):
                    if step is None or step.probes is None:
                        continue
                    for j, reference in enumerate(step.probes):
                        if isinstance(reference, int) and reference >= len(raw_names):
                            r.problem(
                                f"protocol[{i}].probes[{j}]",
                                f"probe index {reference} out of range (the plan has {len(raw_names)} probes)",
                            )
                        elif isinstance(reference, str) and reference not in raw_names:
                            known = ", ".join(repr(n) for n in raw_names if isinstance(n, str))
                            r.problem(f"protocol[{i}].probes[{j}]", f"no probe named {reference!r} (probes: {known})")
            if items and all(s is not None for s in parsed_steps):
                protocol = tuple(parsed_steps)

    nerves: tuple = ()
    if data.get("nerves") is not None:
        items = r.items(data["nerves"], "nerves")
        if items is not None:
            parsed_nerves = [_parse_nerve(r, n, f"nerves[{i}]") for i, n in enumerate(items)]
            nerves = tuple(parsed_nerves) if all(n is not None for n in parsed_nerves) else None

    isotherms = DEFAULT_ISOTHERMS_C
    if data.get("isotherms_c") is not None:
        isotherms = _parse_number_list(r, data["isotherms_c"], "isotherms_c", rule="temperature", unit="degC")
        if isotherms is not None:
            for i, value in enumerate(isotherms):
                if value >= BODY_TEMPERATURE_C:
                    r.problem(f"isotherms_c[{i}]", f"must be below body temperature (37 degC), got {value:g}")
            if len(set(isotherms)) != len(isotherms):
                r.problem("isotherms_c", "has repeated values")

    snapshots = None
    if data.get("snapshot_times_s") is not None:
        snapshots = _parse_number_list(r, data["snapshot_times_s"], "snapshot_times_s", rule="non_negative", unit="s")
        if snapshots is not None:
            if any(b <= a for a, b in zip(snapshots, snapshots[1:])):
                r.problem("snapshot_times_s", "must increase strictly")
            if protocol is not None:
                total = sum(step.duration_s for step in protocol)
                for i, value in enumerate(snapshots):
                    if value > total + 1e-9:
                        r.problem(f"snapshot_times_s[{i}]", f"{value:g} s is after the protocol ends ({total:g} s)")

    grid = None
    if data.get("grid") is not None:
        gdata = r.obj(data["grid"], "grid", optional=("spacing_mm",))
        if gdata is not None:
            spacing = None
            if gdata.get("spacing_mm") is not None:
                spacing = r.number(gdata["spacing_mm"], "grid.spacing_mm", rule="positive", unit="mm")
                if spacing is not None and spacing > MAX_GRID_SPACING_MM:
                    r.problem("grid.spacing_mm", f"must be at most {MAX_GRID_SPACING_MM:g} mm, got {spacing:g}")
            grid = GridSpec(spacing)

    if r.problems:
        raise PlanValidationError(source, r.problems)
    return Plan(
        name=name,
        tissue=tissue,
        probes=probes,
        protocol=protocol,
        volume=volume,
        description=description,
        notes=notes,
        nerves=nerves,
        isotherms_c=isotherms,
        snapshot_times_s=snapshots,
        grid=grid,
    )


# ============================================================================ writing
def _boundary_to_dict(boundary: ProbeBoundary) -> dict:
    result = {"kind": boundary.kind}
    for key in ("freeze_temperature", "heat_flux_per_length", "heat_transfer_coefficient", "coolant_temperature"):
        value = getattr(boundary, key)
        if value is not None:
            result[key] = value
    result["cooldown_time"] = boundary.cooldown_time
    return result


def _vec(values) -> list[float]:
    return [float(v) for v in values]


def plan_to_dict(plan: Plan) -> dict:
    """The JSON-ready dict of ``plan`` at the current schema version (keys in a fixed order)."""
    volume = None
    if isinstance(plan.volume, DemoVolume):
        volume = {"demo": plan.volume.demo}
    elif isinstance(plan.volume, VolumeFile):
        volume = {"path": plan.volume.path, "sha256": plan.volume.sha256}
        if plan.volume.series_uid is not None:
            volume["series_uid"] = plan.volume.series_uid

    tissue = {"source": plan.tissue.source}
    if plan.tissue.tissue_class is not None:
        tissue["class"] = plan.tissue.tissue_class
    if plan.tissue.labels is not None:
        tissue["labels"] = {"path": plan.tissue.labels.path, "sha256": plan.tissue.labels.sha256}
        if plan.tissue.labels.table is not None:
            tissue["labels"]["table"] = plan.tissue.labels.table
    tissue["overrides"] = {key: dict(fields) for key, fields in plan.tissue.overrides.items()}

    probes = []
    for probe in plan.probes:
        item = {"name": probe.name, "model": probe.model, "tip": _vec(probe.tip), "entry": _vec(probe.entry)}
        if probe.custom is not None:
            item["diameter_mm"] = float(probe.custom.diameter_mm)
            item["active_length_mm"] = float(probe.custom.active_length_mm)
            item["tip_offset_mm"] = float(probe.custom.tip_offset_mm)
            item["boundary"] = _boundary_to_dict(probe.custom.boundary)
        probes.append(item)

    protocol = []
    for step in plan.protocol:
        item = {"kind": step.kind, "duration_s": float(step.duration_s)}
        if step.probes is not None:
            item["probes"] = list(step.probes)
        if step.kind == "active_thaw" or step.thaw_temperature_c != DEFAULT_THAW_TEMPERATURE_C:
            item["thaw_temperature_c"] = float(step.thaw_temperature_c)
        protocol.append(item)

    nerves = [
        {"name": n.name, "points": [_vec(p) for p in n.points], "radius_mm": float(n.radius_mm), "target": n.target}
        for n in plan.nerves
    ]
    return {
        "format": PLAN_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": plan.name,
        "description": plan.description,
        "notes": plan.notes,
        "volume": volume,
        "tissue": tissue,
        "probes": probes,
        "protocol": protocol,
        "nerves": nerves,
        "isotherms_c": [float(v) for v in plan.isotherms_c],
        "snapshot_times_s": None if plan.snapshot_times_s is None else [float(v) for v in plan.snapshot_times_s],
        "grid": None if plan.grid is None else {"spacing_mm": plan.grid.spacing_mm},
    }


def format_json(value, level: int = 0) -> str:
    """JSON text with 2-space indents, lists of plain values (points, times) on one line.

    Strict JSON (no NaN or infinity: ``ValueError``), non-ASCII text kept as is.
    """
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {format_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + format_json(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def plan_to_json(plan: Plan) -> str:
    """The plan as the JSON text :func:`save_plan` writes (UTF-8, 2-space indent, points on one line)."""
    return format_json(plan_to_dict(plan)) + "\n"


def plan_sha256(plan: Plan) -> str:
    """SHA-256 of the plan's canonical JSON (sorted keys, no spaces): identifies its content."""
    text = json.dumps(plan_to_dict(plan), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_plan(plan: Plan, path) -> Path:
    """Write ``plan`` to ``path`` atomically; return the path.

    The plan is validated first (an invalid plan raises :class:`PlanValidationError` and
    writes nothing). The text goes to a temporary file in the same folder, is flushed and
    fsynced, then renamed over ``path`` with :func:`os.replace`, so a reader (or a crash)
    sees either the old file or the new one, never a part-written one.
    """
    path = Path(path)
    data = plan_to_dict(plan)
    plan_from_dict(data, source=str(path))  # refuse to write what would not load
    text = format_json(data) + "\n"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); give the plan the mode it had, or the
        # usual mode for a new file (0666 less the umask).
        os.chmod(temporary, _file_mode(path))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _file_mode(path: Path) -> int:
    """Permission bits for a saved plan: those of the file it replaces, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ============================================================================ loading
def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise InputError(f"duplicate key {key!r} in one JSON object")
        result[key] = value
    return result


def plan_from_json(text: str, *, source: str = "plan") -> Plan:
    """Parse and validate plan JSON text (see :func:`plan_from_dict`)."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except InputError as error:
        raise InputError(f"{source}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of more than 4300 digits, deep nesting
        raise InputError(f"{source}: not a readable JSON plan ({type(error).__name__}: {str(error)[:80]})") from None
    return plan_from_dict(data, source=source)


def volume_sha256(path) -> str:
    """SHA-256 identifying an image file or a folder (a DICOM series).

    A file: the hash of its bytes. A folder: the hash over its files in sorted order of
    their relative paths (POSIX form), each contributing its path, a NUL, its size and its
    bytes, so renaming, adding or changing any file changes the hash.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
            relative = file.relative_to(path).as_posix()
            digest.update(relative.encode("utf-8") + b"\0" + str(file.stat().st_size).encode() + b"\0")
            _hash_file(digest, file)
    else:
        _hash_file(digest, path)
    return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)


def resolve_plan_path(plan_path, relative) -> Path:
    """``relative`` (a path from a plan file) resolved against the plan file's folder."""
    relative = Path(relative)
    if relative.is_absolute() or plan_path is None:
        return relative
    return Path(plan_path).resolve().parent / relative


def file_problems(plan: Plan, plan_path) -> list[str]:
    """Problems with the files a plan refers to: missing, or changed since saved (sha256).

    ``plan_path`` is the plan file (relative paths are resolved against its folder), or
    None for a plan not saved yet (paths relative to the working folder).
    """
    problems = []
    references = []
    if isinstance(plan.volume, VolumeFile):
        references.append(("volume", plan.volume.path, plan.volume.sha256))
    if plan.tissue.labels is not None:
        references.append(("tissue.labels", plan.tissue.labels.path, plan.tissue.labels.sha256))
    for where, relative, expected in references:
        path = resolve_plan_path(plan_path, relative)
        if not path.exists():
            problems.append(f"{where}.path: not found: {path}")
            continue
        try:
            actual = volume_sha256(path)
        except OSError as error:
            problems.append(f"{where}.path: cannot read {path}: {error.strerror or error}")
            continue
        if actual != expected:
            problems.append(
                f"{where}.sha256: {path} has changed since the plan was saved "
                f"(sha256 on disk {actual[:12]}..., in the plan {expected[:12]}...); "
                "check it is the right image and update the plan's sha256"
            )
    return problems


def load_plan(path, *, check_files: bool = True) -> Plan:
    """Read, migrate and validate a plan file.

    Parameters
    ----------
    path : str or Path
        The plan JSON file.
    check_files : bool
        Also check that the volume and label files exist and match their sha256.

    Raises
    ------
    InputError
        Unreadable file or invalid JSON (one line naming the file), or a
        :class:`PlanValidationError` listing every problem with its JSON path.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such plan file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    plan = plan_from_json(text, source=str(path))
    if check_files:
        problems = file_problems(plan, path)
        if problems:
            raise PlanValidationError(str(path), problems)
    return plan


# ============================================================================ for the solver
def resolve_probe(plan: Plan, index: int) -> PlacedProbe:
    """Probe ``index`` of ``plan`` as the solver's :class:`PlacedProbe` (catalogue numbers)."""
    probe = plan.probes[index]
    if probe.custom is not None:
        return PlacedProbe(
            name=probe.name,
            tip=tuple(probe.tip),
            entry=tuple(probe.entry),
            diameter_mm=probe.custom.diameter_mm,
            active_length_mm=probe.custom.active_length_mm,
            boundary=probe.custom.boundary,
            tip_offset_mm=probe.custom.tip_offset_mm,
        )
    models = load_probes()
    if probe.model not in models:
        known = ", ".join(models)
        raise InputError(f"probes[{index}].model: unknown probe model {probe.model!r} (known: {known}, custom)")
    return models[probe.model].place(probe.tip, probe.entry, name=probe.name)


def placed_probes(plan: Plan) -> tuple[PlacedProbe, ...]:
    """All probes of ``plan`` as :class:`PlacedProbe`, in plan order."""
    return tuple(resolve_probe(plan, i) for i in range(len(plan.probes)))


def protocol_steps(plan: Plan) -> tuple[ProtocolStep, ...]:
    """The plan's protocol as the solver's :class:`ProtocolStep` tuple (names -> indices)."""
    names = [probe.name for probe in plan.probes]
    steps = []
    for i, step in enumerate(plan.protocol):
        indices = None
        if step.probes is not None:
            indices = []
            for j, reference in enumerate(step.probes):
                if isinstance(reference, str):
                    if reference not in names:
                        raise InputError(f"protocol[{i}].probes[{j}]: no probe named {reference!r}")
                    reference = names.index(reference)
                elif not 0 <= reference < len(names):
                    raise InputError(f"protocol[{i}].probes[{j}]: probe index {reference} out of range")
                indices.append(reference)
            # A probe named twice is driven once.
            indices = tuple(dict.fromkeys(indices))
        steps.append(ProtocolStep(step.kind, float(step.duration_s), indices, float(step.thaw_temperature_c)))
    return tuple(steps)


def snapshot_times(plan: Plan) -> tuple[float, ...]:
    """Times (s from the start) at which to keep the temperature field.

    The plan's ``snapshot_times_s``, or by default the end of each protocol step.
    """
    if plan.snapshot_times_s is not None:
        return tuple(float(t) for t in plan.snapshot_times_s)
    times, elapsed = [], 0.0
    for step in plan.protocol:
        elapsed += float(step.duration_s)
        times.append(elapsed)
    return tuple(times)


def geometry_problems(plan: Plan, volume) -> list[str]:
    """Problems placing the plan in ``volume`` (a :class:`planner.volume.Volume`): probe
    tips and entry points outside the image, nerve points outside it."""
    problems = []
    for i, probe in enumerate(plan.probes):
        if not bool(volume.contains(probe.tip)):
            problems.append(f"probes[{i}].tip: {_fmt(probe.tip)} mm is outside the volume {_fmt_bounds(volume)}")
    for i, nerve in enumerate(plan.nerves):
        for j, point in enumerate(nerve.points):
            if not bool(volume.contains(point)):
                problems.append(
                    f"nerves[{i}].points[{j}]: {_fmt(point)} mm is outside the volume {_fmt_bounds(volume)}"
                )
                break
    return problems


def _fmt(point) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in point) + "]"


def _fmt_bounds(volume) -> str:
    low, high = volume.bounds_world()
    return f"({_fmt(low)} to {_fmt(high)})"
