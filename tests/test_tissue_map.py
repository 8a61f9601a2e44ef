"""tissue_from_ct on a synthetic CT phantom whose tissue layout is known voxel by voxel."""

import numpy as np
import pytest

from planner.errors import InputError
from planner.labels import Tissue
from planner.tissue_map import body_mask, skin_shell, tissue_from_ct
from planner.volume import Volume, affine_from_geometry

# Array (k, j, i); spacing i = j = 1 mm, k = 0.5 mm, so the skin shell (1.5 mm) is
# one voxel thick across i and j and three voxels thick across k.
SHAPE = (40, 60, 60)
SPACING_IJK = (1.0, 1.0, 0.5)
BODY = (slice(4, 36), slice(10, 50), slice(10, 50))


def make_phantom():
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    hu[BODY] = 40.0  # soft tissue
    hu[10:30, 15:25, 15:25] = -100.0  # fat
    hu[10:30, 30:40, 15:25] = 700.0  # bone
    hu[10:30, 30:40, 30:40] = 200.0  # enhanced blood: still soft tissue
    hu[12:28, 15:25, 30:42] = -800.0  # lung, enclosed
    hu[12:28, 18:21, 42:45] = -300.0  # partial-volume air at its edge: air-bearing
    # An airway from the lung out through the top face (k = 4): open in 3D, closed in each slice.
    hu[4:12, 19:21, 35:37] = -1000.0
    hu[36:39, 2:6, 2:6] = 100.0  # the scanner table: tissue-like, not connected to the body
    affine = affine_from_geometry(SPACING_IJK, (-30.0, -30.0, -10.0))
    return Volume(hu, affine, modality="CT", units="HU", metadata={"source": "phantom"})


@pytest.fixture(scope="module")
def labels():
    return tissue_from_ct(make_phantom())


def test_labels_are_uint8_on_the_ct_geometry(labels):
    ct = make_phantom()
    assert labels.array.dtype == np.uint8
    assert labels.array.shape == ct.array.shape
    np.testing.assert_array_equal(labels.affine, ct.affine)
    assert labels.modality == "SEG"


def test_outside_the_body_and_the_table_are_air(labels):
    assert labels.array[0, 0, 0] == Tissue.AIR
    assert np.all(labels.array[36:39, 2:6, 2:6] == Tissue.AIR)
    inside = np.zeros(SHAPE, bool)
    inside[BODY] = True
    assert np.all(labels.array[~inside] == Tissue.AIR)
    assert np.all(labels.array[inside] != Tissue.AIR)


def test_interior_classes_follow_hu_ranges(labels):
    a = labels.array
    assert np.all(a[10:30, 15:25, 15:25] == Tissue.FAT)
    assert np.all(a[10:30, 30:40, 15:25] == Tissue.BONE)
    assert np.all(a[10:30, 30:40, 30:40] == Tissue.SOFT_TISSUE)
    assert np.all(a[12:28, 15:25, 30:42] == Tissue.LUNG)
    assert np.all(a[12:28, 18:21, 42:45] == Tissue.LUNG)
    # The airway is inside the body (filled slice by slice) below the skin shell.
    assert np.all(a[8:12, 19:21, 35:37] == Tissue.LUNG)
    assert a[20, 45, 45] == Tissue.SOFT_TISSUE


def test_skin_shell_is_thickness_in_mm_along_every_axis(labels):
    a = labels.array
    k, j, i = 20, 30, 30  # a point in plain soft tissue inside each face's reach
    # Across i (1 mm voxels): one voxel, centre 0.5 mm under the surface.
    assert a[k, j, 10] == Tissue.SKIN and a[k, j, 11] != Tissue.SKIN
    assert a[k, j, 49] == Tissue.SKIN and a[k, j, 48] != Tissue.SKIN
    # Across j, the same.
    assert a[k, 10, 12] == Tissue.SKIN and a[k, 11, 12] != Tissue.SKIN
    # Across k (0.5 mm voxels): three voxels, centres 0.25, 0.75, 1.25 mm under the surface.
    column = a[4:12, 45, 45]
    np.testing.assert_array_equal(column == Tissue.SKIN, [True, True, True, False, False, False, False, False])
    bottom = a[28:36, 45, 45]
    np.testing.assert_array_equal(bottom == Tissue.SKIN, [False] * 5 + [True] * 3)


def test_skin_shell_stays_closed_when_spacing_exceeds_thickness():
    body = np.zeros((12, 12, 12), bool)
    body[2:10, 2:10, 2:10] = True
    shell = skin_shell(body, (4.0, 1.0, 1.0), thickness_mm=1.5)
    # k faces: one 4 mm voxel each (deeper than 1.5 mm, but the surface must be closed).
    assert np.all(shell[2, 3:9, 3:9]) and np.all(shell[9, 3:9, 3:9])
    assert not np.any(shell[3:9, 4:8, 4:8])


def test_body_cut_by_the_field_of_view_has_no_skin_at_the_cut():
    body = np.zeros((10, 10, 10), bool)
    body[:, 2:8, 2:8] = True  # runs through both k ends of the array
    shell = skin_shell(body, (1.0, 1.0, 1.0))
    assert not shell[0, 4, 4] and not shell[9, 4, 4]
    assert shell[5, 2, 4]


def test_body_mask_keeps_largest_component_only():
    hu = np.full((10, 20, 20), -1000.0)
    hu[2:8, 2:12, 2:12] = 0.0
    hu[2:4, 15:18, 15:18] = 0.0
    mask = body_mask(hu)
    assert mask.sum() == 6 * 10 * 10


def test_soft_tissue_label_option_selects_muscle():
    labels = tissue_from_ct(make_phantom(), soft_tissue_label=Tissue.MUSCLE)
    assert labels.array[20, 45, 45] == Tissue.MUSCLE
    assert not np.any(labels.array == Tissue.SOFT_TISSUE)


def test_non_hu_volume_is_refused():
    ct = make_phantom()
    ct.units = "label"
    with pytest.raises(InputError, match="phantom: tissue from HU needs a CT in HU, this volume is modality CT, values in 'label'"):
        tissue_from_ct(ct)
    ultrasound = make_phantom()
    ultrasound.modality, ultrasound.units = "US", ""
    with pytest.raises(InputError, match="this volume is modality US$"):
        tissue_from_ct(ultrasound)


def test_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("CRYOPLAN_MAX_MEMORY_BYTES", "100000")
    with pytest.raises(InputError, match="phantom"):
        tissue_from_ct(make_phantom())


@pytest.mark.realdata
def test_real_head_ct_gives_a_plausible_tissue_map():
    from realdata import invesalius_ct_path
    from scipy import ndimage

    from planner.imaging import read_volume

    ct = read_volume(invesalius_ct_path())
    labels = tissue_from_ct(ct).array
    fractions = np.bincount(labels.ravel(), minlength=len(Tissue)) / labels.size
    # A head fills about a third of this scan: the skull is bone, the brain soft tissue.
    assert 0.5 < fractions[Tissue.AIR] < 0.8
    assert 0.03 < fractions[Tissue.BONE] < 0.1
    assert 0.15 < fractions[Tissue.SOFT_TISSUE] < 0.35
    assert 0.005 < fractions[Tissue.SKIN] < 0.04
    assert fractions[Tissue.FAT] > 0.005
    # The head holder's bright arc is not connected to the head: it stays outside the body.
    hu = ct.array
    assert np.count_nonzero((hu > 300) & (labels == Tissue.AIR)) > 500
    # Skin is the outer layer: every body voxel with an air neighbour within its slice is skin.
    body = labels != Tissue.AIR
    edge = body & ~ndimage.binary_erosion(body, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool),
                                           border_value=1)
    assert np.all(labels[edge] == Tissue.SKIN)
