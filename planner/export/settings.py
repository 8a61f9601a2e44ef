"""What an export makes: views, times, picture size, grid spacing; parsed from CLI text.

Every option has a parser that takes the command-line spelling (``"3d,axial"``,
``"end,120"``, ``"1600x1200"``) or an already parsed value, and raises
:class:`~planner.errors.InputError` with one line naming the option on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import InputError

VIEWS = ("3d", "axial", "coronal", "sagittal", "probe")
"""Views an export can render: the 3D scene, the three world-oriented slices through the ice
ball, and ``probe``: the plane holding the first probe's shaft (the in-plane ultrasound view)."""

TIME_WORDS = ("end", "all")
"""``end``: the end of the protocol; ``all``: every snapshot time of the plan."""

DEFAULT_SIZE = (1600, 1200)
MIN_SIDE_PX = 64
MAX_SIDE_PX = 8192

EXPORT_LAYOUT_VERSION = 1
"""Bumped when the files an export writes change, so a resumed run redoes older outputs."""


@dataclass(frozen=True)
class ExportSettings:
    """The choices that shape an export's outputs (a resumed run redoes a plan when they change).

    Attributes
    ----------
    views : tuple of str
        Names from :data:`VIEWS`, in the order given.
    times : tuple of (float or str)
        Seconds from the start of the protocol, ``"end"`` or ``"all"``.
    size : (width, height)
        Picture size, pixels.
    spacing_mm : float or None
        Solver grid spacing, mm (None: the plan's, else the solver's choice).
    """

    views: tuple[str, ...] = VIEWS
    times: tuple[float | str, ...] = ("end",)
    size: tuple[int, int] = DEFAULT_SIZE
    spacing_mm: float | None = None

    def fingerprint(self) -> dict:
        """JSON-ready description, compared by resume (with the layout version and the thermal
        solver's source fingerprint, so outputs of another solver are never taken as current)."""
        from planner.thermal.preview import solver_fingerprint

        return {
            "layout": EXPORT_LAYOUT_VERSION,
            "solver": solver_fingerprint(),
            "views": list(self.views),
            "times": [t if isinstance(t, str) else float(t) for t in self.times],
            "size": [int(self.size[0]), int(self.size[1])],
            "spacing_mm": None if self.spacing_mm is None else float(self.spacing_mm),
        }


def make_settings(*, views=VIEWS, times=("end",), size=DEFAULT_SIZE, spacing_mm=None) -> ExportSettings:
    """:class:`ExportSettings` from CLI text or parsed values (each checked)."""
    if spacing_mm is not None:
        if isinstance(spacing_mm, bool) or not isinstance(spacing_mm, (int, float)) or not (
            math.isfinite(spacing_mm) and spacing_mm > 0
        ):
            raise InputError(f"--spacing: expected a positive number of mm, got {spacing_mm!r}")
        spacing_mm = float(spacing_mm)
    return ExportSettings(parse_views(views), parse_times(times), parse_size(size), spacing_mm)


def _items(value, option: str) -> list[str]:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence):
        parts = [part.strip() if isinstance(part, str) else part for part in value]
    else:
        raise InputError(f"{option}: expected a comma-separated list, got {value!r}")
    if not parts or any(part == "" for part in parts):
        raise InputError(f"{option}: empty item in {value!r}")
    return parts


def parse_views(value) -> tuple[str, ...]:
    """``"3d,axial"`` or a sequence -> a tuple of view names (duplicates dropped, order kept).

    Raises
    ------
    InputError
        An unknown view (the message lists the known ones).
    """
    views = []
    for item in _items(value, "--views"):
        name = str(item).lower()
        if name not in VIEWS:
            raise InputError(f"--views: unknown view {item!r}; choose from {', '.join(VIEWS)}")
        if name not in views:
            views.append(name)
    return tuple(views)


def parse_times(value) -> tuple[float | str, ...]:
    """``"end"``, ``"120,300,end"``, ``"all"`` or a sequence -> a tuple of seconds and words.

    Seconds must be finite and not negative; whether they lie within a plan's protocol is
    checked per plan (:func:`resolve_times`). Duplicates are dropped, order kept.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    times: list[float | str] = []
    for item in _items(value, "--times"):
        if isinstance(item, str) and item.lower() in TIME_WORDS:
            entry: float | str = item.lower()
        else:
            try:
                entry = float(item)
            except (TypeError, ValueError):
                raise InputError(
                    f"--times: expected seconds, 'end' or 'all', got {item!r}"
                ) from None
            if isinstance(item, bool) or not math.isfinite(entry) or entry < 0:
                raise InputError(f"--times: expected seconds >= 0, got {item!r}")
        if entry not in times:
            times.append(entry)
    return tuple(times)


def parse_size(value) -> tuple[int, int]:
    """``"1600x1200"`` or ``(width, height)`` -> ``(width, height)`` pixels, each 64 to 8192."""
    if isinstance(value, str):
        parts = value.lower().replace("\N{MULTIPLICATION SIGN}", "x").split("x")
        if len(parts) != 2:
            raise InputError(f"--size: expected WIDTHxHEIGHT in pixels (e.g. 1600x1200), got {value!r}")
        try:
            width, height = (int(part.strip()) for part in parts)
        except ValueError:
            raise InputError(f"--size: expected WIDTHxHEIGHT in whole pixels, got {value!r}") from None
    else:
        try:
            width, height = value
        except (TypeError, ValueError):
            raise InputError(f"--size: expected (width, height) in pixels, got {value!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise InputError(f"--size: expected whole pixels, got {value!r}")
    for side, name in ((width, "width"), (height, "height")):
        if not MIN_SIDE_PX <= side <= MAX_SIDE_PX:
            raise InputError(f"--size: {name} must be {MIN_SIDE_PX} to {MAX_SIDE_PX} px, got {side}")
    return int(width), int(height)


def resolve_times(times, snapshot_times_s, total_s: float, *, source: str = "plan") -> tuple[float, ...]:
    """The seconds to export for one plan, sorted and unique.

    Parameters
    ----------
    times : sequence of (float or str)
        As :func:`parse_times` returns.
    snapshot_times_s : sequence of float
        The plan's own snapshot times, s (for ``"all"``).
    total_s : float
        The protocol's duration, s (``"end"``).
    source : str
        Names the plan in messages.

    Raises
    ------
    InputError
        A time after the end of the protocol.
    """
    out = set()
    for entry in times:
        if entry == "end":
            out.add(float(total_s))
        elif entry == "all":
            out.update(float(t) for t in snapshot_times_s)
        else:
            if entry > total_s * (1 + 1e-12):
                raise InputError(f"{source}: --times {entry:g} s is after the end of its protocol ({total_s:g} s)")
            out.add(float(entry))
    return tuple(sorted(out))
