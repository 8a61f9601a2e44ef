"""Tissue surfaces land where the voxels are in world space, whatever the grid's affine."""

import numpy as np
import pytest

from planner.anatomy import tissue_surfaces
from planner.errors import InputError
from planner.labels import Tissue
from planner.volume import Volume, affine_from_geometry

from geometry import rotation


MIRROR = np.diag([1.0, -1.0, 1.0])
GRIDS = {
    "axis-aligned": affine_from_geometry((0.5, 0.5, 0.5), (0.0, 0.0, 0.0)),
    "oblique anisotropic": affine_from_geometry((0.4, 0.5, 0.7), (-20.0, 35.0, -8.0), rotation(30, -20, 50)),
    "oblique left-handed": affine_from_geometry((0.5, 0.45, 0.6), (5.0, -3.0, 12.0), rotation(-40, 25, 10) @ MIRROR),
}
SHAPE = (44, 48, 52)  # (k, j, i)
SPHERE_RADIUS_MM = 6.0


def phantom(affine):
    """A bone sphere and a vessel block, drawn where the grid puts them in world space.

    The sphere's centre is a fixed world point, so a surface in the wrong place shows as a
    shifted centre; the block fills known voxel indices.
    """
    volume = Volume(np.zeros(SHAPE, np.uint8), affine, modality="SEG")
    centre_ijk = np.array([26.0, 24.0, 22.0]) + 0.3
    centre = volume.index_to_world(centre_ijk)
    k, j, i = np.indices(SHAPE)
    world = volume.index_to_world(np.stack([i, j, k], axis=-1).astype(float))
    labels = np.full(SHAPE, Tissue.MUSCLE, np.uint8)
    labels[np.linalg.norm(world - centre, axis=-1) <= SPHERE_RADIUS_MM] = Tissue.BONE
    labels[4:10, 5:12, 6:14] = Tissue.VESSEL
    labels[:, :, :2] = Tissue.AIR
    return Volume(labels, affine, modality="SEG", units="label"), centre


@pytest.mark.parametrize("grid", list(GRIDS))
def test_the_bone_sphere_surface_sits_on_the_sphere_in_world(grid):
    labels, centre = phantom(GRIDS[grid])
    surfaces = tissue_surfaces(labels)
    assert set(surfaces) == {"bone", "vessel", "muscle"}
    points = np.asarray(surfaces["bone"].points)
    radii = np.linalg.norm(points - centre, axis=1)
    spacing = labels.spacing
    # Surface nets put the surface on the voxel faces: about half a voxel outside the
    # centres inside the sphere, within a voxel of the true sphere.
    assert abs(radii.mean() - SPHERE_RADIUS_MM) < 0.5 * spacing.max()
    assert np.all(np.abs(radii - SPHERE_RADIUS_MM) < spacing.max())
    np.testing.assert_allclose(points.mean(axis=0), centre, atol=0.1)


@pytest.mark.parametrize("grid", list(GRIDS))
def test_the_vessel_block_surface_wraps_its_voxels(grid):
    labels, _ = phantom(GRIDS[grid])
    surface = tissue_surfaces(labels, tissues=[Tissue.VESSEL], smoothing_iterations=0)["vessel"]
    # Without smoothing the surface is the voxels' own faces: in index space the block
    # 4:10, 5:12, 6:14 spans k 3.5-9.5, j 4.5-11.5, i 5.5-13.5.
    ijk = labels.world_to_index(np.asarray(surface.points))
    np.testing.assert_allclose(ijk.min(axis=0), [5.5, 4.5, 3.5], atol=1e-6)
    np.testing.assert_allclose(ijk.max(axis=0), [13.5, 11.5, 9.5], atol=1e-6)
    block_volume = 6 * 7 * 8 * abs(np.linalg.det(labels.affine[:3, :3]))
    assert surface.is_manifold
    assert abs(abs(surface.volume) - block_volume) < 1e-6 * block_volume


def test_only_the_classes_asked_for_and_present_are_returned():
    labels, _ = phantom(GRIDS["axis-aligned"])
    assert set(tissue_surfaces(labels, tissues=[Tissue.BONE, Tissue.NERVE])) == {"bone"}
    empty = Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    assert tissue_surfaces(empty) == {}


def test_a_float_image_is_refused():
    with pytest.raises(InputError, match="integer label map"):
        tissue_surfaces(Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)))
