"""Freeze-thaw protocols: an ordered list of steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import InputError

STEP_KINDS = ("freeze", "passive_thaw", "active_thaw")


@dataclass(frozen=True)
class ProtocolStep:
    """One step of a protocol.

    Parameters
    ----------
    kind : {"freeze", "passive_thaw", "active_thaw"}
        ``"freeze"``: the driven probes apply their :class:`~planner.thermal.probes.ProbeBoundary`.
        ``"passive_thaw"``: no heat flows through the probe (the probe region behaves
        like the surrounding tissue). ``"active_thaw"``: the active segment of the
        driven probes is held at ``thaw_temperature``.
    duration : float
        s, > 0.
    probes : tuple of int, optional
        Indices of the probes this step drives; ``None`` drives all. The others are
        passive during the step.
    thaw_temperature : float
        degC, probe surface temperature during ``"active_thaw"``.
    """

    kind: str
    duration: float
    probes: tuple[int, ...] | None = None
    thaw_temperature: float = 20.0

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise InputError(f"protocol step kind must be one of {', '.join(STEP_KINDS)}; got {self.kind!r}")
        if (
            not isinstance(self.duration, (int, float))
            or not math.isfinite(self.duration)
            or self.duration <= 0
        ):
            raise InputError(f"protocol step duration must be > 0 s, got {self.duration!r}")
        if not math.isfinite(self.thaw_temperature) or self.thaw_temperature <= -273.15:
            raise InputError(f"protocol step thaw_temperature must be a finite degC value, got {self.thaw_temperature!r}")
        if self.probes is not None:
            if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.probes):
                raise InputError(f"protocol step probes must be non-negative probe indices, got {self.probes!r}")


def protocol_duration(protocol: Sequence[ProtocolStep]) -> float:
    """Total duration of ``protocol``, s."""
    return float(sum(step.duration for step in protocol))


def validate_protocol(protocol: Sequence[ProtocolStep], n_probes: int) -> None:
    """Raise :class:`InputError` if ``protocol`` is empty or names a probe that does not exist."""
    if len(protocol) == 0:
        raise InputError("protocol: needs at least one step (got none)")
    for index, step in enumerate(protocol):
        if not isinstance(step, ProtocolStep):
            raise InputError(f"protocol[{index}]: must be a ProtocolStep, got {type(step).__name__}")
        if step.probes is not None:
            for probe_index in step.probes:
                if probe_index >= n_probes:
                    raise InputError(
                        f"protocol[{index}].probes: probe index {probe_index} out of range (there are {n_probes} probes)"
                    )
