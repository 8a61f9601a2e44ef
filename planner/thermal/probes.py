"""Probes as the solver sees them: where the active segment is and how it cools."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import InputError

BOUNDARY_KINDS = ("temperature", "heat_flux", "convective")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ProbeBoundary:
    """How the active segment cools during a freeze step.

    Parameters
    ----------
    kind : {"temperature", "heat_flux", "convective"}
        ``"temperature"``: the active segment follows a first-order approach from its
        temperature at the start of the step to ``freeze_temperature`` (time constant
        ``cooldown_time``). ``"heat_flux"``: ``heat_flux_per_length`` W per metre of
        active length is extracted. ``"convective"``: ``h (T - T_coolant)`` per unit
        area of the active segment's surface.
    freeze_temperature : float, optional
        degC, plateau surface temperature (``"temperature"``).
    cooldown_time : float
        s, time constant of the approach to the plateau (0: instant).
    heat_flux_per_length : float, optional
        W/m extracted per metre of active length, > 0 (``"heat_flux"``).
    heat_transfer_coefficient : float, optional
        W/m2/K, > 0 (``"convective"``).
    coolant_temperature : float, optional
        degC (``"convective"``).
    """

    kind: str
    freeze_temperature: float | None = None
    cooldown_time: float = 0.0
    heat_flux_per_length: float | None = None
    heat_transfer_coefficient: float | None = None
    coolant_temperature: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in BOUNDARY_KINDS:
            raise InputError(f"probe boundary kind must be one of {', '.join(BOUNDARY_KINDS)}; got {self.kind!r}")
        if not _finite(self.cooldown_time) or self.cooldown_time < 0:
            raise InputError(f"probe boundary cooldown_time must be >= 0 s, got {self.cooldown_time!r}")
        required = {
            "temperature": ("freeze_temperature",),
            "heat_flux": ("heat_flux_per_length",),
            "convective": ("heat_transfer_coefficient", "coolant_temperature"),
        }[self.kind]
        for field_name in required:
            value = getattr(self, field_name)
            if value is None or not _finite(value):
                raise InputError(f"probe boundary {self.kind!r} needs a finite {field_name}, got {value!r}")
        for field_name in ("freeze_temperature", "coolant_temperature"):
            value = getattr(self, field_name)
            if value is not None and _finite(value) and value <= -273.15:
                raise InputError(f"probe boundary {field_name} must be above absolute zero, got {value}")
        if self.kind == "heat_flux" and self.heat_flux_per_length < 0:
            raise InputError(f"probe boundary heat_flux_per_length must be >= 0 W/m, got {self.heat_flux_per_length}")
        if self.kind == "convective" and self.heat_transfer_coefficient <= 0:
            raise InputError(
                f"probe boundary heat_transfer_coefficient must be > 0 W/m2/K, got {self.heat_transfer_coefficient}"
            )


@dataclass(frozen=True)
class PlacedProbe:
    """One probe placed in world (LPS) coordinates.

    Parameters
    ----------
    name : str
        Label shown to the user.
    tip : (3,) tuple of float
        World LPS mm, the physical tip.
    entry : (3,) tuple of float
        World LPS mm, where the shaft enters; ``entry - tip`` points up the shaft.
    diameter_mm : float
        Outer diameter of the active segment, mm.
    active_length_mm : float
        Length of the freezing segment, mm.
    boundary : ProbeBoundary
        How the active segment cools during a freeze step.
    tip_offset_mm : float
        The active segment runs from ``tip_offset_mm`` to ``tip_offset_mm +
        active_length_mm`` back from the tip along the shaft.
    """

    name: str
    tip: tuple[float, float, float]
    entry: tuple[float, float, float]
    diameter_mm: float
    active_length_mm: float
    boundary: ProbeBoundary
    tip_offset_mm: float = 0.0

    def __post_init__(self) -> None:
        for field_name in ("tip", "entry"):
            value = np.asarray(getattr(self, field_name), dtype=float)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise InputError(f"probe {self.name!r}: {field_name} must be three finite numbers (mm)")
        if np.linalg.norm(np.subtract(self.entry, self.tip)) < 1e-6:
            raise InputError(f"probe {self.name!r}: entry must differ from tip (it sets the shaft direction)")
        for field_name in ("diameter_mm", "active_length_mm"):
            value = getattr(self, field_name)
            if not _finite(value) or value <= 0:
                raise InputError(f"probe {self.name!r}: {field_name} must be > 0 mm, got {value!r}")
        if not _finite(self.tip_offset_mm) or self.tip_offset_mm < 0:
            raise InputError(f"probe {self.name!r}: tip_offset_mm must be >= 0 mm, got {self.tip_offset_mm!r}")
        if not isinstance(self.boundary, ProbeBoundary):
            raise InputError(f"probe {self.name!r}: boundary must be a ProbeBoundary")

    @property
    def axis(self) -> np.ndarray:
        """Unit vector from the tip up the shaft (towards the entry), shape (3,)."""
        direction = np.subtract(self.entry, self.tip).astype(float)
        return direction / np.linalg.norm(direction)

    @property
    def radius_mm(self) -> float:
        """Outer radius of the active segment, mm."""
        return 0.5 * self.diameter_mm

    def active_segment(self) -> tuple[np.ndarray, np.ndarray]:
        """World LPS mm end points ``(start, end)`` of the active segment's axis, start nearer the tip."""
        tip = np.asarray(self.tip, dtype=float)
        start = tip + self.tip_offset_mm * self.axis
        return start, start + self.active_length_mm * self.axis


def placed_probes(probes) -> tuple[PlacedProbe, ...]:
    """``probes`` as a tuple, checked: at least one, each a :class:`PlacedProbe` (else
    :class:`~planner.errors.InputError` naming the entry)."""
    probes = tuple(probes)
    if len(probes) == 0:
        raise InputError("probes: need at least one probe")
    for i, probe in enumerate(probes):
        if not isinstance(probe, PlacedProbe):
            raise InputError(f"probes[{i}]: must be a PlacedProbe, got {type(probe).__name__}")
    return probes
