"""Ice-ball engine: Pennes bioheat with phase change on a local box around the probes.

Parts kept apart (as in py-pde): tissue properties (:mod:`.properties`), probes and
protocols (:mod:`.probes`, :mod:`.protocol`), the grid (:mod:`.grid`), boundary shapes
and their rasterisation (:mod:`.geometry`), the rate kernels (:mod:`.kernels`), the
time loop and trackers (:mod:`.solver`), the result (:mod:`.result`) and the plan-level
entry :func:`simulate`. Importing this package pulls in no rendering library.
"""

from planner.thermal.probes import PlacedProbe, ProbeBoundary
from planner.thermal.properties import TissueProperties, generic_soft_tissue
from planner.thermal.protocol import ProtocolStep, protocol_duration, validate_protocol


def __getattr__(name):
    # The solver pulls in numba; load it only when asked for.
    if name in ("simulate",):
        from planner.thermal.simulation import simulate

        return simulate
    if name in ("solve", "SimulationCancelled", "ThermalSolverError", "Phase", "HeldBoundary", "SourceBoundary"):
        from planner.thermal import solver

        return getattr(solver, name)
    if name == "ThermalResult":
        from planner.thermal.result import ThermalResult

        return ThermalResult
    if name == "ThermalGrid":
        from planner.thermal.grid import ThermalGrid

        return ThermalGrid
    raise AttributeError(name)


__all__ = [
    "HeldBoundary",
    "Phase",
    "PlacedProbe",
    "ProbeBoundary",
    "ProtocolStep",
    "SimulationCancelled",
    "SourceBoundary",
    "ThermalGrid",
    "ThermalResult",
    "ThermalSolverError",
    "TissueProperties",
    "generic_soft_tissue",
    "protocol_duration",
    "simulate",
    "solve",
    "validate_protocol",
]
