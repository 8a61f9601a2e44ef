"""Where a probe sits: derived geometry of a placement on a tissue map.

A placement is a physical tip and a skin entry point (world LPS mm), or a tip, a
direction of insertion and a depth. From it and a tissue map follow the quantities a
planner reads off: how deep the tip is below the skin along the shaft, the angle between
the shaft and the skin, where the shaft crosses the skin, and where the active
(freezing) segment lies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.anatomy import skin
from planner.errors import InputError
from planner.volume import Volume


@dataclass(frozen=True, eq=False)
class ProbePlacement:
    """One probe placed in a body, with the geometry derived from the tissue map.

    Parameters
    ----------
    name : str
        Probe label.
    model : str
        Catalogue model name (``"custom"`` for plan-defined numbers, ``""`` if none).
    tip, entry : (3,) ndarray, mm
        World LPS physical tip and entry point; the shaft runs from ``entry`` to ``tip``.
    diameter_mm, active_length_mm, tip_offset_mm : float
        Probe numbers, mm: the active segment runs from ``tip_offset_mm`` to
        ``tip_offset_mm + active_length_mm`` back from the tip.
    skin_point : (3,) ndarray or None, mm
        Where the line of the shaft enters the body (the skin surface), when there is a
        tissue map and the line crosses the surface before the tip.
    skin_normal : (3,) ndarray or None
        Outward unit normal of the skin at ``skin_point``.
    entry_to_skin_mm : float or None
        Signed distance from ``entry`` to the nearest skin surface, mm: positive above
        the skin (in air), negative below it; ``None`` without a tissue map, or when the
        entry is outside the image.
    usable_length_mm : float or None
        Longest insertion the probe allows, mm, when the catalogue says.
    """

    name: str
    model: str
    tip: np.ndarray
    entry: np.ndarray
    diameter_mm: float
    active_length_mm: float
    tip_offset_mm: float = 0.0
    skin_point: np.ndarray | None = None
    skin_normal: np.ndarray | None = None
    entry_to_skin_mm: float | None = None
    usable_length_mm: float | None = None

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the entry towards the tip (the direction of insertion), shape (3,)."""
        return (self.tip - self.entry) / self.shaft_length_mm

    @property
    def shaft_length_mm(self) -> float:
        """Distance from the entry point to the tip, mm."""
        return float(np.linalg.norm(self.tip - self.entry))

    @property
    def radius_mm(self) -> float:
        """Half the probe's outer diameter, mm."""
        return 0.5 * self.diameter_mm

    @property
    def insertion_depth_mm(self) -> float | None:
        """Length of shaft inside the body: from the skin crossing to the tip, mm
        (``None`` when the shaft does not cross the skin)."""
        if self.skin_point is None:
            return None
        return float(np.linalg.norm(self.tip - self.skin_point))

    @property
    def angle_to_skin_normal_deg(self) -> float | None:
        """Angle between the shaft and the skin's normal where it enters, degrees:
        0 for a shaft perpendicular to the skin, towards 90 for a shallow one."""
        if self.skin_normal is None or not np.all(np.isfinite(self.skin_normal)):
            return None
        cosine = abs(float(np.dot(self.direction, self.skin_normal)))
        return math.degrees(math.acos(min(cosine, 1.0)))

    @property
    def angle_to_skin_surface_deg(self) -> float | None:
        """Angle between the shaft and the skin surface, degrees (90 = perpendicular)."""
        angle = self.angle_to_skin_normal_deg
        return None if angle is None else 90.0 - angle

    @property
    def active_segment(self) -> np.ndarray:
        """World ends of the active (freezing) segment, ``[[distal], [proximal]]``, mm, shape (2, 3)."""
        back = -self.direction
        near = self.tip + back * self.tip_offset_mm
        far = self.tip + back * (self.tip_offset_mm + self.active_length_mm)
        return np.stack([near, far])

    @property
    def active_centre(self) -> np.ndarray:
        """Middle of the active segment, world mm, shape (3,)."""
        return self.active_segment.mean(axis=0)

    def __repr__(self) -> str:
        depth = self.insertion_depth_mm
        angle = self.angle_to_skin_normal_deg
        depth_text = f"{depth:.1f} mm deep" if depth is not None else "depth ?"
        angle_text = f"{angle:.0f} deg to the skin normal" if angle is not None else "angle ?"
        return f"ProbePlacement({self.name!r}, {self.model or 'no model'}, {depth_text}, {angle_text})"


def entry_from_direction(tip, direction, depth_mm: float) -> np.ndarray:
    """The entry point ``depth_mm`` back from ``tip`` against ``direction`` (world mm), shape (3,).

    ``direction`` points the way the probe travels (from the entry towards the tip).
    """
    tip = np.asarray(tip, dtype=float)
    direction = _unit(direction, "direction")
    if not np.isfinite(depth_mm) or depth_mm <= 0:
        raise InputError(f"depth_mm: must be > 0 mm, got {depth_mm!r}")
    return tip - direction * float(depth_mm)


def _unit(vector, what: str) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)):
        raise InputError(f"{what}: expected 3 finite numbers")
    norm = float(np.linalg.norm(vector))
    if norm < 1e-9:
        raise InputError(f"{what}: must not be zero")
    return vector / norm


def _point(value, what: str) -> np.ndarray:
    point = np.asarray(value, dtype=float)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError(f"{what}: expected 3 finite numbers [x, y, z] in mm")
    return point


def _probe_numbers(model, diameter_mm, active_length_mm, tip_offset_mm, usable_length_mm):
    """``(model name, diameter, active length, tip offset, usable length)`` from a catalogue
    model (by name or object) with explicit numbers taking precedence."""
    from planner.catalog import get_probe

    if isinstance(model, str) and model and model != "custom":
        model = get_probe(model)
    name = getattr(model, "name", model if isinstance(model, str) else "") or ""
    values = {
        "diameter_mm": diameter_mm if diameter_mm is not None else getattr(model, "diameter_mm", None),
        "active_length_mm": active_length_mm if active_length_mm is not None else getattr(model, "active_length_mm", None),
        "tip_offset_mm": tip_offset_mm if tip_offset_mm is not None else getattr(model, "tip_offset_mm", 0.0),
        "usable_length_mm": usable_length_mm if usable_length_mm is not None else getattr(model, "usable_length_mm", None),
    }
    for key in ("diameter_mm", "active_length_mm"):
        value = values[key]
        if value is None:
            raise InputError(f"{key}: needed (give a catalogue probe model or the number)")
        if not np.isfinite(value) or value <= 0:
            raise InputError(f"{key}: must be > 0 mm, got {value!r}")
    if not np.isfinite(values["tip_offset_mm"]) or values["tip_offset_mm"] < 0:
        raise InputError(f"tip_offset_mm: must be >= 0 mm, got {values['tip_offset_mm']!r}")
    usable = values["usable_length_mm"]
    if usable is not None and (not np.isfinite(usable) or usable <= 0):
        raise InputError(f"usable_length_mm: must be > 0 mm, got {usable!r}")
    return (
        name,
        float(values["diameter_mm"]),
        float(values["active_length_mm"]),
        float(values["tip_offset_mm"]),
        None if usable is None else float(usable),
    )


def place_probe(
    labels: Volume | None,
    *,
    tip,
    entry=None,
    direction=None,
    depth_mm: float | None = None,
    model=None,
    name: str = "probe",
    diameter_mm: float | None = None,
    active_length_mm: float | None = None,
    tip_offset_mm: float | None = None,
    usable_length_mm: float | None = None,
) -> ProbePlacement:
    """Place a probe by tip and entry, or by tip, direction and depth, and derive its geometry.

    Parameters
    ----------
    labels : Volume or None
        Tissue map (:class:`planner.labels.Tissue` values) for the skin quantities; with
        ``None`` only the probe's own geometry is derived.
    tip : (3,) array_like, mm
        World LPS physical tip.
    entry : (3,) array_like, mm, optional
        Entry point. Give either ``entry`` or ``direction``.
    direction : (3,) array_like, optional
        Direction of insertion (entry towards tip), any length.
    depth_mm : float, optional
        With ``direction``: the entry is this far back from the tip. Without it the entry
        is where the line through the tip along ``direction`` enters the body (needs
        ``labels``).
    model : str or ProbeModel, optional
        Catalogue model (name or object) giving the diameter, active length and tip offset.
    name : str
        Probe label.
    diameter_mm, active_length_mm, tip_offset_mm, usable_length_mm : float, optional
        Probe numbers in mm, overriding the model's.

    Returns
    -------
    ProbePlacement

    Raises
    ------
    InputError
        For missing or contradictory arguments, an entry equal to the tip, an unknown
        model, or a direction without depth that never meets the skin.
    """
    tip = _point(tip, "tip")
    entry_on_skin = False
    model_name, diameter, active, offset, usable = _probe_numbers(
        model, diameter_mm, active_length_mm, tip_offset_mm, usable_length_mm
    )
    if (entry is None) == (direction is None):
        raise InputError("give either entry or direction (with or without depth_mm)")
    if entry is not None:
        if depth_mm is not None:
            raise InputError("depth_mm goes with direction, not with entry")
        entry = _point(entry, "entry")
    elif depth_mm is not None:
        entry = entry_from_direction(tip, direction, depth_mm)
    else:
        if labels is None:
            raise InputError("direction without depth_mm needs a tissue map to find the skin")
        unit = _unit(direction, "direction")
        reach = float(np.linalg.norm(np.array(labels.shape_xyz) * labels.spacing))
        entry = skin.skin_crossing(labels, tip - unit * reach, tip, beyond_entry_mm=0.0)
        if entry is None:
            raise InputError(f"probe {name!r}: the line through the tip along the direction never enters the body")
        entry_on_skin = True
    if np.linalg.norm(tip - entry) < 1e-6:
        raise InputError(f"probe {name!r}: entry must differ from tip (it sets the shaft direction)")

    skin_point = normal = entry_distance = None
    if labels is not None:
        skin_point = entry.copy() if entry_on_skin else skin.skin_crossing(labels, entry, tip)
        if skin_point is not None:
            normal = skin.skin_normal(labels, skin_point)
        if bool(labels.contains(entry, margin_voxels=0.5)):
            distance = skin.distance_to_skin(labels, entry)
            entry_distance = None if not np.isfinite(distance) else distance
    return ProbePlacement(
        name=name,
        model=model_name,
        tip=tip,
        entry=entry,
        diameter_mm=diameter,
        active_length_mm=active,
        tip_offset_mm=offset,
        skin_point=skin_point,
        skin_normal=normal,
        entry_to_skin_mm=entry_distance,
        usable_length_mm=usable,
    )


def placement_from_plan_probe(probe, labels: Volume | None) -> ProbePlacement:
    """:func:`place_probe` for a plan's probe.

    Parameters
    ----------
    probe : planner.plan.PlanProbe or planner.thermal.probes.PlacedProbe
        A plan entry (catalogue model, or ``"custom"`` with its numbers) or a probe as the
        solver sees it.
    labels : Volume or None
        Tissue map.
    """
    custom = getattr(probe, "custom", None)
    if custom is not None:
        return place_probe(
            labels, tip=probe.tip, entry=probe.entry, model="custom", name=probe.name,
            diameter_mm=custom.diameter_mm, active_length_mm=custom.active_length_mm,
            tip_offset_mm=custom.tip_offset_mm,
        )
    if hasattr(probe, "diameter_mm"):  # a PlacedProbe: numbers already resolved
        return place_probe(
            labels, tip=probe.tip, entry=probe.entry, model="", name=probe.name,
            diameter_mm=probe.diameter_mm, active_length_mm=probe.active_length_mm,
            tip_offset_mm=probe.tip_offset_mm,
        )
    return place_probe(labels, tip=probe.tip, entry=probe.entry, model=probe.model, name=probe.name)
