"""Fine-grained materials of the demo anatomy and what each looks like in CT and ultrasound.

The demo cases first paint a map of these materials (cortical vs cancellous bone,
artery vs vein, ligament, pleura...), then turn it into the coarse tissue label map
(:class:`planner.labels.Tissue`), a CT in Hounsfield units and a B-mode ultrasound
image through the tables below.

Values (approximate, for a plausible picture, not for measurement):

- CT numbers: air -1000, aerated lung about -850, fat -100, skin and nerve 30-40,
  unenhanced blood about 40, skeletal muscle about 50, ligament and tendon 80-90,
  cancellous bone a few hundred, cortical bone 1000-1500 HU.
- Acoustic impedance (MRayl): fat 1.38, blood 1.61, soft tissue 1.6-1.7, tendon about
  1.75, cortical bone about 7.8, air 0.0004. Attenuation in dB per mm (one way) at a
  linear probe's ~10 MHz: soft tissue 0.5-1, blood about 0.2, bone and air so high that
  nothing comes back from behind them (acoustic shadow).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from planner.labels import Tissue


class Material(IntEnum):
    """Materials painted by the demo cases (values index the tables below)."""

    AIR = 0
    SKIN = 1
    FAT = 2
    FASCIA = 3
    MUSCLE = 4
    CORTICAL_BONE = 5
    CANCELLOUS_BONE = 6
    NERVE = 7
    NEUROMA = 8
    ARTERY = 9
    VEIN = 10
    PLEURA = 11
    LUNG = 12
    LIGAMENT = 13
    TENDON = 14
    VISCERA = 15
    GEL = 16  # ultrasound coupling gel between the probe face and the skin


# Columns: tissue label, CT HU, CT texture amplitude (HU), impedance (MRayl),
# attenuation (dB/mm, one way), diffuse backscatter (relative).
_TABLE = {
    Material.AIR: (Tissue.AIR, -1000.0, 0.0, 0.0004, 5.0, 0.0),
    Material.SKIN: (Tissue.SKIN, 45.0, 6.0, 1.65, 0.8, 0.55),
    Material.FAT: (Tissue.FAT, -100.0, 8.0, 1.38, 0.6, 0.10),
    Material.FASCIA: (Tissue.SOFT_TISSUE, 30.0, 5.0, 1.70, 1.0, 0.55),
    Material.MUSCLE: (Tissue.MUSCLE, 50.0, 5.0, 1.65, 0.9, 0.22),
    Material.CORTICAL_BONE: (Tissue.BONE, 1250.0, 60.0, 7.80, 8.0, 0.30),
    Material.CANCELLOUS_BONE: (Tissue.BONE, 300.0, 70.0, 4.00, 8.0, 0.30),
    Material.NERVE: (Tissue.NERVE, 35.0, 4.0, 1.60, 0.8, 0.30),
    Material.NEUROMA: (Tissue.NERVE, 40.0, 4.0, 1.58, 0.7, 0.10),
    Material.ARTERY: (Tissue.VESSEL, 42.0, 3.0, 1.61, 0.2, 0.006),
    Material.VEIN: (Tissue.VESSEL, 38.0, 3.0, 1.61, 0.2, 0.006),
    Material.PLEURA: (Tissue.SOFT_TISSUE, 25.0, 4.0, 1.65, 0.9, 0.70),
    Material.LUNG: (Tissue.LUNG, -850.0, 30.0, 0.0004, 5.0, 0.0),
    Material.LIGAMENT: (Tissue.SOFT_TISSUE, 80.0, 6.0, 1.75, 1.2, 0.80),
    Material.TENDON: (Tissue.SOFT_TISSUE, 90.0, 6.0, 1.75, 1.2, 0.80),
    Material.VISCERA: (Tissue.SOFT_TISSUE, 30.0, 8.0, 1.63, 0.8, 0.22),
    Material.GEL: (Tissue.AIR, -1000.0, 0.0, 1.50, 0.0, 0.0),
}


def _column(index: int, dtype) -> np.ndarray:
    return np.array([_TABLE[m][index] for m in Material], dtype=dtype)


TISSUE_OF = _column(0, np.uint8)
"""Tissue label of each material, indexed by ``Material`` value."""
HU_OF = _column(1, np.float32)
"""Mean CT number (HU) of each material."""
HU_TEXTURE_OF = _column(2, np.float32)
"""Standard deviation (HU) of the smooth, tissue-specific texture added to each material."""
IMPEDANCE_OF = _column(3, np.float32)
"""Acoustic impedance (MRayl) of each material."""
ATTENUATION_DB_PER_MM_OF = _column(4, np.float32)
"""One-way ultrasound attenuation (dB/mm at about 10 MHz) of each material."""
BACKSCATTER_OF = _column(5, np.float32)
"""Relative diffuse backscatter (speckle brightness) of each material."""
