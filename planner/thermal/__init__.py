"""Ice-ball engine: Pennes bioheat with phase change on a local box around the probes.

Parts kept apart (as in py-pde): tissue properties (:mod:`.properties`), probes and
their boundary conditions (:mod:`.probes`), protocols (:mod:`.protocol`), and the
solver itself. Importing this package pulls in no rendering library.
"""

from planner.thermal.probes import PlacedProbe, ProbeBoundary
from planner.thermal.properties import TissueProperties, generic_soft_tissue
from planner.thermal.protocol import ProtocolStep, protocol_duration, validate_protocol

__all__ = [
    "PlacedProbe",
    "ProbeBoundary",
    "ProtocolStep",
    "TissueProperties",
    "generic_soft_tissue",
    "protocol_duration",
    "validate_protocol",
]
