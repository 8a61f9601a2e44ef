"""The tissue and probe catalogues in ``data/``: loading, validation, look-up.

``data/tissues.toml`` holds one :class:`~planner.thermal.properties.TissueProperties`
per tissue class of :class:`planner.labels.Tissue` (air excepted: it is outside the body
and the solver does not conduct through it) plus named generic sets such as ``"r98"``.
``data/probes.toml`` holds the cryoprobe models a plan refers to by name.

Both files are validated field by field on loading; every problem is reported at once in
one :class:`~planner.errors.InputError` naming the file, the entry and the field.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.errors import InputError
from planner.labels import Tissue
from planner.thermal.probes import BOUNDARY_KINDS, PlacedProbe, ProbeBoundary
from planner.thermal.properties import TissueProperties

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TISSUES_PATH = DATA_DIR / "tissues.toml"
PROBES_PATH = DATA_DIR / "probes.toml"

PROBE_USES = ("cryoneurolysis", "cryoablation")
ABSOLUTE_ZERO_C = -273.15

# Tissue fields that a catalogue entry or a plan's override may set, with what each must be.
# "positive": > 0; "non_negative": >= 0; "temperature": finite degC above absolute zero.
TISSUE_NUMBER_RULES: dict[str, tuple[str, str]] = {
    "conductivity_unfrozen": ("positive", "W/m/K"),
    "conductivity_frozen": ("positive", "W/m/K"),
    "heat_capacity_unfrozen": ("positive", "J/m3/K"),
    "heat_capacity_frozen": ("positive", "J/m3/K"),
    "latent_heat": ("non_negative", "J/m3"),
    "liquidus": ("temperature", "degC"),
    "solidus": ("temperature", "degC"),
    "perfusion": ("non_negative", "1/s"),
    "blood_heat_capacity": ("positive", "J/m3/K"),
    "metabolic_heat": ("non_negative", "W/m3"),
}
TISSUE_FLAG_FIELDS = ("frozen_conductivity_varies",)
TISSUE_OVERRIDABLE_FIELDS = tuple(TISSUE_NUMBER_RULES) + TISSUE_FLAG_FIELDS
TISSUE_FIELDS = tuple(f.name for f in dataclasses.fields(TissueProperties))

BOUNDARY_FIELDS = tuple(f.name for f in dataclasses.fields(ProbeBoundary))


# ---------------------------------------------------------------------------- checks
def is_number(value) -> bool:
    """True for a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_number(problems: list[str], path: str, value, *, rule: str, unit: str = "") -> float | None:
    """Append a problem to ``problems`` unless ``value`` is a finite number obeying ``rule``.

    ``rule`` is ``"any"``, ``"positive"`` (> 0), ``"non_negative"`` (>= 0) or
    ``"temperature"`` (above absolute zero). Returns the value as float, or ``None``
    when it is not a number at all.
    """
    if not is_number(value):
        problems.append(f"{path}: expected a finite number, got {_show(value)}")
        return None
    value = float(value)
    unit_text = f" {unit}" if unit else ""
    if rule == "positive" and not value > 0:
        problems.append(f"{path}: must be > 0{unit_text}, got {value:g}")
    elif rule == "non_negative" and not value >= 0:
        problems.append(f"{path}: must be >= 0{unit_text}, got {value:g}")
    elif rule == "temperature" and not value > ABSOLUTE_ZERO_C:
        problems.append(f"{path}: must be above absolute zero (-273.15 degC), got {value:g}")
    return value


def _show(value, limit: int = 40) -> str:
    """A short printable rendering of a JSON/TOML value for error messages."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int) and not is_number(value):
        text = "a huge integer"
    elif isinstance(value, str):
        text = repr(value[: limit + 2])
    elif isinstance(value, (list, tuple)):
        text = f"a list of {len(value)}"
    elif isinstance(value, Mapping):
        text = "an object"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tissue_field_problems(values: Mapping, path: str, *, complete: bool) -> list[str]:
    """Problems with tissue property fields, each prefixed with ``path.field``.

    Parameters
    ----------
    values : mapping
        Field name -> value, as read from TOML or a plan's ``overrides``.
    path : str
        Where the fields live, e.g. ``"tissues.muscle"`` or ``"tissue.overrides.fat"``.
    complete : bool
        True for a catalogue entry (every field required, ``name`` and ``source``
        included); False for overrides (any subset of the overridable fields).
    """
    problems: list[str] = []
    allowed = TISSUE_FIELDS if complete else TISSUE_OVERRIDABLE_FIELDS
    for key in values:
        if key not in allowed:
            hint = "" if complete else f" (overridable: {', '.join(TISSUE_OVERRIDABLE_FIELDS)})"
            problems.append(f"{path}.{key}: unknown field{hint}")
    if complete:
        for key in TISSUE_FIELDS:
            if key not in values:
                problems.append(f"{path}.{key}: missing")
        for key in ("name", "source"):
            if key in values and (not isinstance(values[key], str) or not values[key].strip()):
                problems.append(f"{path}.{key}: expected a non-empty string, got {_show(values[key])}")
    for key, (rule, unit) in TISSUE_NUMBER_RULES.items():
        if key in values:
            check_number(problems, f"{path}.{key}", values[key], rule=rule, unit=unit)
    for key in TISSUE_FLAG_FIELDS:
        if key in values and not isinstance(values[key], bool):
            problems.append(f"{path}.{key}: expected true or false, got {_show(values[key])}")
    liquidus, solidus = values.get("liquidus"), values.get("solidus")
    if is_number(liquidus) and liquidus > 0:
        problems.append(f"{path}.liquidus: tissue water freezes at or below 0 degC, got {liquidus:g}")
    if is_number(liquidus) and is_number(solidus) and not solidus < liquidus:
        problems.append(f"{path}.solidus: must be below liquidus ({liquidus:g} degC), got {solidus:g}")
    return problems


def tissue_override_problems(base: TissueProperties, overrides, path: str) -> list[str]:
    """Problems with replacing fields of ``base`` by ``overrides``, each prefixed with ``path``.

    Checks each override on its own, then the merged whole (an override may be valid
    alone and still move the solidus above the unchanged liquidus).
    """
    if not isinstance(overrides, Mapping):
        return [f"{path}: expected an object of fields to replace, got {_show(overrides)}"]
    problems = tissue_field_problems(overrides, path, complete=False)
    if not problems:
        merged = {**dataclasses.asdict(base), **overrides}
        problems = tissue_field_problems(merged, path, complete=True)
    return problems


def tissue_with_overrides(base: TissueProperties, overrides: Mapping, path: str) -> TissueProperties:
    """``base`` with some fields replaced, validated as a whole.

    Raises :class:`InputError` naming ``path`` (e.g. ``"tissue.overrides.muscle"``) and
    the field when an override is unknown or the result is not physical (for instance a
    solidus moved above the unchanged liquidus).
    """
    problems = tissue_override_problems(base, overrides, path)
    if problems:
        raise InputError("; ".join(problems))
    values = {k: (float(v) if k in TISSUE_NUMBER_RULES else v) for k, v in overrides.items()}
    return dataclasses.replace(base, **values)


def boundary_field_problems(values, path: str) -> list[str]:
    """Problems with a probe boundary table/object (fields of ``ProbeBoundary``)."""
    if not isinstance(values, Mapping):
        return [f"{path}: expected an object with the probe boundary fields, got {_show(values)}"]
    problems: list[str] = []
    for key in values:
        if key not in BOUNDARY_FIELDS:
            problems.append(f"{path}.{key}: unknown field (known: {', '.join(BOUNDARY_FIELDS)})")
    kind = values.get("kind")
    if kind not in BOUNDARY_KINDS:
        problems.append(f"{path}.kind: expected one of {', '.join(BOUNDARY_KINDS)}, got {_show(kind)}")
    required = {
        "temperature": ("freeze_temperature",),
        "heat_flux": ("heat_flux_per_length",),
        "convective": ("heat_transfer_coefficient", "coolant_temperature"),
    }.get(kind, ())
    for key in required:
        if values.get(key) is None:
            problems.append(f"{path}.{key}: needed for a {kind!r} boundary")
    rules = {
        "freeze_temperature": ("temperature", "degC"),
        "coolant_temperature": ("temperature", "degC"),
        "cooldown_time": ("non_negative", "s"),
        "heat_flux_per_length": ("non_negative", "W/m"),
        "heat_transfer_coefficient": ("positive", "W/m2/K"),
    }
    for key, (rule, unit) in rules.items():
        if values.get(key) is not None:
            check_number(problems, f"{path}.{key}", values[key], rule=rule, unit=unit)
    return problems


def boundary_from_fields(values: Mapping) -> ProbeBoundary:
    """A :class:`ProbeBoundary` from checked fields (numbers as float)."""
    return ProbeBoundary(
        **{k: (float(v) if is_number(v) else v) for k, v in values.items()},
    )


# ---------------------------------------------------------------------------- tissues
def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise InputError(f"{path}: catalogue file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"{path}: cannot read catalogue: {error}") from None


def load_tissues(path=None) -> dict[str, TissueProperties]:
    """Load the tissue catalogue.

    Parameters
    ----------
    path : str or Path, optional
        A tissue catalogue TOML file; ``data/tissues.toml`` by default.

    Returns
    -------
    dict of str to TissueProperties
        One entry per tissue class key (``"skin"``, ``"fat"``, ... as
        :attr:`planner.labels.Tissue.key`, air excepted) and one per named set (``"r98"``).

    Raises
    ------
    InputError
        When the file is unreadable, a class is missing, an entry has an unknown or
        missing field, or a value is not physical; every problem is listed, each as
        ``tissues.<key>.<field>: <problem>``.
    """
    return dict(_load_tissues_cached(Path(path) if path else TISSUES_PATH))


@lru_cache(maxsize=8)
def _load_tissues_cached(path: Path) -> dict[str, TissueProperties]:
    document = _read_toml(path)
    problems: list[str] = []
    tissues = document.get("tissues")
    sets = document.get("sets", {})
    if not isinstance(tissues, dict):
        raise InputError(f"{path}: no [tissues.<class>] tables")
    if not isinstance(sets, dict):
        raise InputError(f"{path}: [sets] must hold tables")
    class_keys = [t.key for t in Tissue if t is not Tissue.AIR]
    for key in class_keys:
        if key not in tissues:
            problems.append(f"tissues.{key}: missing (every tissue class needs properties)")
    for key in tissues:
        if key not in class_keys:
            problems.append(f"tissues.{key}: not a tissue class (known: {', '.join(class_keys)})")
    for key in sets:
        if key in tissues:
            problems.append(f"sets.{key}: same name as a tissue class")
    result: dict[str, TissueProperties] = {}
    for table_name, table in (("tissues", tissues), ("sets", sets)):
        for key, entry in table.items():
            where = f"{table_name}.{key}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected a table")
                continue
            entry_problems = tissue_field_problems(entry, where, complete=True)
            if not entry_problems and entry["name"] != key:
                entry_problems.append(f"{where}.name: must match the table key {key!r}, got {entry['name']!r}")
            if entry_problems:
                problems.extend(entry_problems)
                continue
            values = {k: (float(v) if k in TISSUE_NUMBER_RULES else v) for k, v in entry.items()}
            result[key] = TissueProperties(**values)
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return result


def tissue_keys(path=None) -> tuple[str, ...]:
    """Names a plan may use for a tissue class or set (``"muscle"``, ..., ``"r98"``)."""
    return tuple(load_tissues(path))


def label_for_tissue_key(key: str) -> int:
    """The label value that carries tissue ``key`` in a homogeneous block.

    A tissue class uses its own :class:`Tissue` value; a named generic set (``"r98"``)
    is generic soft tissue.
    """
    try:
        return int(Tissue[key.upper()])
    except KeyError:
        return int(Tissue.SOFT_TISSUE)


def tissue_properties_for_labels(overrides: Mapping | None = None, *, path=None) -> dict[int, TissueProperties]:
    """Properties per label value, for the solver.

    Parameters
    ----------
    overrides : mapping, optional
        ``{"muscle": {"perfusion": 0.001}, ...}``: tissue class key -> fields to replace.
    path : str or Path, optional
        Tissue catalogue; ``data/tissues.toml`` by default.

    Returns
    -------
    dict of int to TissueProperties
        One entry per :class:`Tissue` value except ``AIR`` (0), which the solver treats as
        outside the conducting body.

    Raises
    ------
    InputError
        When an override names an unknown class or field, or makes a tissue non-physical;
        the message is ``tissue.overrides.<class>.<field>: <problem>``.
    """
    tissues = load_tissues(path)
    overrides = dict(overrides or {})
    problems: list[str] = []
    for key, fields in overrides.items():
        where = f"tissue.overrides.{key}"
        if key not in tissues or key not in {t.key for t in Tissue}:
            known = ", ".join(t.key for t in Tissue if t is not Tissue.AIR)
            problems.append(f"{where}: not a tissue class (known: {known})")
    if problems:
        raise InputError("; ".join(problems))
    result: dict[int, TissueProperties] = {}
    for tissue in Tissue:
        if tissue is Tissue.AIR:
            continue
        properties = tissues[tissue.key]
        if tissue.key in overrides:
            properties = tissue_with_overrides(properties, overrides[tissue.key], f"tissue.overrides.{tissue.key}")
        result[int(tissue)] = properties
    return result


# ---------------------------------------------------------------------------- probes
@dataclass(frozen=True)
class ProbeModel:
    """One cryoprobe model of the catalogue.

    Parameters
    ----------
    name : str
        Identifier used by plan files, e.g. ``"n2o-16g"``.
    label : str
        Human-readable name.
    maker : str
        Generic description of the kind of system (no manufacturer claims).
    cryogen : str
        ``"N2O"``, ``"CO2"``, ``"argon"``, ``"LN2"``.
    gauge : str
        Needle gauge, e.g. ``"16 G"``.
    diameter_mm : float
        Outer diameter of the active segment, mm.
    active_length_mm : float
        Length of the cooled segment, mm.
    tip_offset_mm : float
        Distance from the physical tip to the start of the cooled segment, mm.
    boundary : ProbeBoundary
        How the active segment cools during a freeze step.
    use : str
        ``"cryoneurolysis"`` or ``"cryoablation"``.
    source : str
        Where the numbers come from, and which are modelling assumptions.
    """

    name: str
    label: str
    maker: str
    cryogen: str
    gauge: str
    diameter_mm: float
    active_length_mm: float
    tip_offset_mm: float
    boundary: ProbeBoundary
    use: str
    source: str

    def place(self, tip, entry, *, name: str | None = None) -> PlacedProbe:
        """This model placed with its tip and entry points (world LPS mm)."""
        return PlacedProbe(
            name=name or self.name,
            tip=tuple(float(v) for v in tip),
            entry=tuple(float(v) for v in entry),
            diameter_mm=self.diameter_mm,
            active_length_mm=self.active_length_mm,
            boundary=self.boundary,
            tip_offset_mm=self.tip_offset_mm,
        )


PROBE_TEXT_FIELDS = ("name", "label", "maker", "cryogen", "gauge", "use", "source")
PROBE_GEOMETRY_RULES = {
    "diameter_mm": "positive",
    "active_length_mm": "positive",
    "tip_offset_mm": "non_negative",
}
PROBE_FIELDS = tuple(f.name for f in dataclasses.fields(ProbeModel))


def probe_geometry_problems(values: Mapping, path: str, *, require_all: bool = True) -> list[str]:
    """Problems with ``diameter_mm``, ``active_length_mm``, ``tip_offset_mm`` and ``boundary``."""
    problems: list[str] = []
    for key, rule in PROBE_GEOMETRY_RULES.items():
        if key in values:
            check_number(problems, f"{path}.{key}", values[key], rule=rule, unit="mm")
        elif require_all or key != "tip_offset_mm":
            problems.append(f"{path}.{key}: missing")
    if "boundary" in values:
        problems.extend(boundary_field_problems(values["boundary"], f"{path}.boundary"))
    else:
        problems.append(f"{path}.boundary: missing")
    return problems


def load_probes(path=None) -> dict[str, ProbeModel]:
    """Load the probe catalogue.

    Parameters
    ----------
    path : str or Path, optional
        A probe catalogue TOML file; ``data/probes.toml`` by default.

    Returns
    -------
    dict of str to ProbeModel
        Keyed by model name, in file order.

    Raises
    ------
    InputError
        When the file is unreadable or an entry is invalid; every problem is listed,
        each as ``probes[<index>].<field>: <problem>`` (with the model's name when known).
    """
    return dict(_load_probes_cached(Path(path) if path else PROBES_PATH))


@lru_cache(maxsize=8)
def _load_probes_cached(path: Path) -> dict[str, ProbeModel]:
    document = _read_toml(path)
    entries = document.get("probes")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: no [[probes]] entries")
    problems: list[str] = []
    result: dict[str, ProbeModel] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"probes[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a table")
            continue
        entry_problems = []
        for key in entry:
            if key not in PROBE_FIELDS:
                entry_problems.append(f"{where}.{key}: unknown field (known: {', '.join(PROBE_FIELDS)})")
        for key in PROBE_TEXT_FIELDS:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                entry_problems.append(f"{where}.{key}: expected a non-empty string, got {_show(entry.get(key))}")
        if isinstance(entry.get("use"), str) and entry["use"] not in PROBE_USES:
            entry_problems.append(f"{where}.use: expected one of {', '.join(PROBE_USES)}, got {entry['use']!r}")
        entry_problems.extend(probe_geometry_problems(entry, where))
        if isinstance(name, str) and name in result:
            entry_problems.append(f"{where}.name: duplicate model name {name!r}")
        if isinstance(name, str) and name == "custom":
            entry_problems.append(f"{where}.name: 'custom' is reserved for plan-defined probes")
        if entry_problems:
            problems.extend(entry_problems)
            continue
        values = dict(entry)
        values["boundary"] = boundary_from_fields(entry["boundary"])
        for key in PROBE_GEOMETRY_RULES:
            values[key] = float(values[key])
        result[name] = ProbeModel(**values)
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return result


def get_probe(name: str, *, path=None) -> ProbeModel:
    """The catalogue's probe model called ``name``.

    Raises
    ------
    InputError
        When there is none; the message lists the known names.
    """
    probes = load_probes(path)
    if name not in probes:
        raise InputError(f"unknown probe model {name!r}; known models: {', '.join(probes)}")
    return probes[name]
