"""Volume: geometry derived from the affine, sampling, and the pyvista conversion."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from planner.volume import Volume, affine_from_geometry

ROTATION = Rotation.from_euler("zyx", [25, -10, 40], degrees=True).as_matrix()


def oblique_volume(dtype=np.float32) -> Volume:
    """A 5x4x3 (i, j, k) volume whose value is a known linear function of world position."""
    affine = affine_from_geometry([0.8, 1.2, 2.5], [-10.0, 20.0, 5.0], ROTATION)
    volume = Volume(np.zeros((3, 4, 5), dtype=dtype), affine, modality="CT", units="HU")
    k, j, i = np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    world = volume.index_to_world(np.stack([i, j, k], axis=-1))
    volume.array[...] = world @ np.array([1.0, -2.0, 0.5]) + 7.0
    return volume


def test_geometry_is_derived_from_the_affine():
    volume = oblique_volume()
    assert volume.shape_xyz == (5, 4, 3)
    np.testing.assert_allclose(volume.spacing, [0.8, 1.2, 2.5])
    np.testing.assert_allclose(volume.origin, [-10.0, 20.0, 5.0])
    np.testing.assert_allclose(volume.direction, ROTATION, atol=1e-12)


def test_world_and_index_maps_are_inverse():
    volume = oblique_volume()
    ijk = np.array([[0, 0, 0], [4, 3, 2], [1.5, 2.25, 0.5]])
    np.testing.assert_allclose(volume.world_to_index(volume.index_to_world(ijk)), ijk, atol=1e-12)
    # one step along i moves by spacing_i along the first direction column
    step = volume.index_to_world([1, 0, 0]) - volume.index_to_world([0, 0, 0])
    np.testing.assert_allclose(step, 0.8 * ROTATION[:, 0])


def test_linear_sampling_reproduces_a_linear_field_and_marks_outside():
    volume = oblique_volume()
    inside = volume.index_to_world([[1.3, 2.6, 0.4], [4, 3, 2], [0, 0, 0]])
    expected = inside @ np.array([1.0, -2.0, 0.5]) + 7.0
    np.testing.assert_allclose(volume.sample(inside), expected, rtol=1e-5)
    outside = volume.index_to_world([[-0.5, 0, 0], [0, 0, 2.6]])
    assert np.isnan(volume.sample(outside)).all()
    assert volume.contains(inside).all() and not volume.contains(outside).any()


def test_pyvista_conversion_keeps_direction_and_values():
    volume = oblique_volume()
    grid = volume.to_pyvista()
    np.testing.assert_allclose(np.asarray(grid.direction_matrix), ROTATION, atol=1e-12)
    np.testing.assert_allclose(grid.spacing, volume.spacing)
    # the point at index (i, j, k) = (4, 1, 2) is where the affine puts it, with the right value
    point_id = 4 + 5 * (1 + 4 * 2)
    np.testing.assert_allclose(grid.points[point_id], volume.index_to_world([4, 1, 2]), atol=1e-5)
    assert grid.point_data["values"][point_id] == volume.array[2, 1, 4]
    back = Volume.from_pyvista(grid, modality="CT")
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


def test_cine_frames_are_time_not_depth():
    frames = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
    cine = Volume(frames, affine_from_geometry([0.5, 0.5, 1], [0, 0, 0]), modality="US",
                  frame_times=[0, 0.03, 0.06, 0.09])
    assert cine.is_cine and cine.n_frames == 4
    third = cine.frame(2)
    assert not third.is_cine and third.array.shape == (1, 2, 3)
    np.testing.assert_array_equal(third.array[0], frames[2])
    assert "4 frames" in repr(cine)


def test_invalid_construction_is_refused():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((2, 2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        Volume(np.zeros((2, 2, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="frame_times"):
        Volume(np.zeros((2, 2, 2)), np.eye(4), frame_times=[0.0])


def test_repr_is_informative():
    text = repr(oblique_volume())
    assert "CT" in text and "5x4x3" in text and "HU" in text
