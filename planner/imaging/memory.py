"""Refuse to allocate a volume that cannot fit in memory, before allocating it."""

from __future__ import annotations

import os

import numpy as np

from planner.errors import InputError

# A reader may need a second copy while converting (e.g. int16 -> float32), so the
# estimate is compared against a share of the available memory, not all of it.
USABLE_FRACTION = 0.8


def available_memory_bytes() -> int:
    """Bytes of memory available to this process now.

    ``CRYOPLAN_MAX_MEMORY_BYTES`` overrides the system figure (tests use it to
    simulate a small machine).
    """
    override = os.environ.get("CRYOPLAN_MAX_MEMORY_BYTES")
    if override:
        return int(float(override))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits_in_memory(shape, dtype, source, *, copies: float = 1.0) -> int:
    """Raise :class:`InputError` if an array of ``shape`` ([k, j, i])/``dtype`` (times ``copies``)
    would not fit in the available memory; return its size in bytes otherwise.

    ``source`` names the file or folder in the message.
    """
    n_voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
    needed = int(n_voxels * np.dtype(dtype).itemsize * copies)
    available = available_memory_bytes()
    if needed > USABLE_FRACTION * available:
        dims = "x".join(str(int(n)) for n in reversed(tuple(shape)))  # (x, y, z) as `planner info` shows it
        raise InputError(
            f"{source}: volume of {dims} voxels needs about {format_bytes(needed)}, "
            f"more than the {format_bytes(USABLE_FRACTION * available)} of memory it may use"
        )
    return needed


def format_bytes(n_bytes: float) -> str:
    """Human size: ``"1.5 GiB"``, ``"12.0 MiB"``, ``"512 B"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"
