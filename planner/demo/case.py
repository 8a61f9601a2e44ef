"""Data types of a demo case: the case itself and the nerve and vessel centrelines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.volume import Volume


def _read_only(array, *, dtype=float) -> np.ndarray:
    array = np.array(array, dtype=dtype, copy=True)
    array.flags.writeable = False
    return array


@dataclass(eq=False)
class NerveLine:
    """A nerve as a centreline with a radius.

    Parameters
    ----------
    name : str
        E.g. ``"intercostal_nerve_T7"``.
    points : (N, 3) ndarray, mm
        Centreline in world LPS millimetres, ordered along the nerve, about 0.5 mm apart,
        clipped to the case's CT volume.
    radius_mm : float
        Nominal radius of the nerve, mm.
    target : bool
        True for the nerve the case is about (the one to freeze).
    radii_mm : (N,) ndarray or None, mm
        Local radius at each point where it varies (a neuroma); ``None`` means
        ``radius_mm`` everywhere.
    """

    name: str
    points: np.ndarray
    radius_mm: float
    target: bool = False
    radii_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = _read_only(self.points)
        if self.points.ndim != 2 or self.points.shape[1] != 3 or len(self.points) < 2:
            raise ValueError(f"{self.name}: points must have shape (N, 3) with N >= 2")
        if self.radii_mm is not None:
            self.radii_mm = _read_only(self.radii_mm)
            if self.radii_mm.shape != (len(self.points),):
                raise ValueError(f"{self.name}: radii_mm needs one radius per point")

    def local_radii_mm(self) -> np.ndarray:
        """Radius at each centreline point, mm, shape (N,)."""
        if self.radii_mm is not None:
            return self.radii_mm
        return np.full(len(self.points), float(self.radius_mm))

    def length_mm(self) -> float:
        """Length of the centreline inside the volume, mm."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())

    def __repr__(self) -> str:
        role = ", target" if self.target else ""
        return f"NerveLine({self.name!r}, {len(self.points)} points, r={self.radius_mm:.2g} mm{role})"


@dataclass(eq=False)
class VesselLine:
    """A blood vessel as a centreline with a radius.

    Parameters
    ----------
    name : str
        E.g. ``"intercostal_artery_7"``.
    points : (N, 3) ndarray, mm
        Centreline in world LPS millimetres, clipped to the case's CT volume.
    radius_mm : float
        Radius of the lumen plus wall, mm.
    kind : str
        ``"artery"`` or ``"vein"``.
    """

    name: str
    points: np.ndarray
    radius_mm: float
    kind: str = "artery"

    def __post_init__(self) -> None:
        self.points = _read_only(self.points)
        if self.points.ndim != 2 or self.points.shape[1] != 3 or len(self.points) < 2:
            raise ValueError(f"{self.name}: points must have shape (N, 3) with N >= 2")
        if self.kind not in ("artery", "vein"):
            raise ValueError(f"{self.name}: kind must be 'artery' or 'vein', not {self.kind!r}")

    def __repr__(self) -> str:
        return f"VesselLine({self.name!r}, {self.kind}, {len(self.points)} points, r={self.radius_mm:.2g} mm)"


@dataclass(eq=False)
class DemoCase:
    """A synthetic, anatomically plausible case for teaching, testing and demos.

    Parameters
    ----------
    name : str
        Short key, e.g. ``"intercostal"``.
    title : str
        One line for menus.
    description : str
        A short teaching note: the nerve, why it is frozen, where to aim, what to spare.
    ct : Volume
        int16 CT in HU (modality ``"CT"``), world LPS mm.
    labels : Volume
        uint8 :class:`planner.labels.Tissue` label map (modality ``"SEG"``) on the CT's grid.
    nerves : list of NerveLine
        Nerve centrelines; exactly one has ``target=True``.
    vessels : list of VesselLine
        Vessel centrelines.
    landmarks : dict of str to (3,) ndarray, mm
        Named world points, e.g. ``"skin_entry_suggestion"``, ``"asis"``.
    ultrasound : Volume or None
        One uint8 B-mode-like frame (modality ``"US"``, a single slice) whose affine
        places it in the same world frame as the CT.

    Notes
    -----
    Arrays are read-only: the built cases are cached and shared. Copy an array
    (``case.ct.array.copy()``) before changing it.
    """

    name: str
    title: str
    description: str
    ct: Volume
    labels: Volume
    nerves: list[NerveLine]
    vessels: list[VesselLine]
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    ultrasound: Volume | None = None

    @property
    def target_nerve(self) -> NerveLine:
        """The nerve this case is about."""
        return next(nerve for nerve in self.nerves if nerve.target)

    def __repr__(self) -> str:
        us = "with ultrasound" if self.ultrasound is not None else "no ultrasound"
        return (
            f"DemoCase({self.name!r}, ct={self.ct!r}, {len(self.nerves)} nerves, "
            f"{len(self.vessels)} vessels, {len(self.landmarks)} landmarks, {us})"
        )
