"""read_volume: modality override and the memory guard's message."""

import numpy as np
import pytest

from planner.errors import InputError
from planner.imaging import read_volume
from planner.imaging.formats import write_volume
from planner.imaging.memory import check_fits_in_memory, format_bytes
from planner.volume import Volume, affine_from_geometry


def test_modality_override_sets_matching_units(tmp_path):
    path = tmp_path / "ct.nrrd"
    write_volume(Volume(np.zeros((2, 3, 4), np.int16), affine_from_geometry([1, 1, 1], [0, 0, 0]),
                        modality="CT", units="HU"), path)
    assert read_volume(path).units == "HU"
    as_us = read_volume(path, modality="us")
    assert (as_us.modality, as_us.units) == ("US", "")


def test_memory_guard_names_the_source_and_readable_sizes(monkeypatch):
    monkeypatch.setenv("CRYOPLAN_MAX_MEMORY_BYTES", str(10 * 2**20))
    assert check_fits_in_memory((10, 10, 10), np.int16, "small.nii") == 2000
    with pytest.raises(InputError, match=r"big\.nii: volume of 512x512x300 voxels needs about 150\.0 MiB"):
        check_fits_in_memory((300, 512, 512), np.int16, "big.nii")


@pytest.mark.parametrize("n_bytes, text", [(512, "512 B"), (2048, "2.0 KiB"), (3 * 2**30, "3.0 GiB")])
def test_format_bytes(n_bytes, text):
    assert format_bytes(n_bytes) == text
