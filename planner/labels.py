"""Tissue label values shared by label maps, the tissue catalogue and the solver.

A tissue label map is a ``uint8`` array; each value names one tissue class. The
values are fixed here so that demo anatomy, imported label maps (after mapping
through a table in ``data/``), the thermal solver and the viewer all agree.
"""

from enum import IntEnum


class Tissue(IntEnum):
    """Tissue classes. ``AIR`` (0) is outside the body."""

    AIR = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    NERVE = 5
    VESSEL = 6
    SOFT_TISSUE = 7
    LUNG = 8

    @property
    def key(self) -> str:
        """Lower-case name used in catalogues and plan files, e.g. ``"soft_tissue"``."""
        return self.name.lower()


def tissue_from_key(key: str) -> Tissue:
    """Return the :class:`Tissue` named by ``key`` (case-insensitive).

    Raises ``ValueError`` naming the known keys when ``key`` is unknown.
    """
    try:
        return Tissue[key.strip().upper()]
    except KeyError:
        known = ", ".join(t.key for t in Tissue)
        raise ValueError(f"unknown tissue {key!r}; known tissues: {known}") from None
