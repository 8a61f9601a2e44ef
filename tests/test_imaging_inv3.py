"""InVesalius .inv3 projects: synthetic archives with known geometry, and the real head CT."""

import io
import plistlib
import tarfile

import numpy as np
import pytest
from scipy import ndimage

from planner.errors import InputError
from planner.imaging import read_volume
from planner.imaging.inv3 import read_inv3
from realdata import invesalius_ct_path


def make_inv3(path, array, *, spacing=(0.5, 0.75, 2.0), modality="CT", compress=True, **plist_extra):
    """Write a minimal InVesalius project holding ``array`` (``[slice, row, column]``)."""
    plist = {
        "format_version": 1,
        "invesalius_version": "test",
        "name": "synthetic",
        "modality": modality,
        "orientation": 1,
        "spacing": list(spacing),
        "scalar_range": [int(array.min()), int(array.max())],
        "window_level": 40.0,
        "window_width": 400.0,
        "matrix": {"filename": "matrix.dat", "shape": list(array.shape), "dtype": array.dtype.name},
        "masks": {},
    }
    plist.update(plist_extra)
    members = {"proj/main.plist": plistlib.dumps(plist), "proj/matrix.dat": array.astype(array.dtype.newbyteorder("<")).tobytes()}
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_synthetic_project_geometry_and_values(tmp_path):
    array = (np.arange(3 * 4 * 5, dtype=np.int16) - 30).reshape(3, 4, 5)
    path = make_inv3(tmp_path / "p.inv3", array)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.array.flags.writeable
    assert (volume.modality, volume.units) == ("CT", "HU")
    # i (column) -> +x left, j (row, stored bottom-up) -> -y anterior, k (slice) -> +z superior
    np.testing.assert_allclose(volume.affine, np.diag([0.5, -0.75, 2.0, 1.0]))
    np.testing.assert_allclose(volume.index_to_world([4, 3, 2]), [2.0, -2.25, 4.0])
    assert volume.metadata["window_level"] == 40.0
    assert volume.metadata["window_width"] == 400.0
    assert volume.metadata["scalar_range"] == [-30, 29]
    assert volume.metadata["name"] == "synthetic"
    assert any("origin" in note for note in volume.metadata["notes"])


def test_uncompressed_tar_and_float_matrix(tmp_path):
    array = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    volume = read_inv3(make_inv3(tmp_path / "plain.inv3", array, compress=False, modality="MRI"))
    np.testing.assert_array_equal(volume.array, array)
    assert (volume.modality, volume.units) == ("MR", "")


@pytest.mark.parametrize("orientation, word", [(2, "coronal"), (3, "sagittal"), ("CORONAL", "coronal")])
def test_non_axial_projects_refused(tmp_path, orientation, word):
    path = make_inv3(tmp_path / "o.inv3", np.zeros((2, 3, 4), np.int16), orientation=orientation)
    with pytest.raises(InputError, match=rf"o\.inv3.*{word}.*only axial"):
        read_inv3(path)


# ---------------------------------------------------------------------------- the real head CT
@pytest.fixture(scope="module")
def head_ct():
    return read_volume(invesalius_ct_path())


@pytest.mark.realdata
def test_head_ct_header_facts(head_ct):
    assert head_ct.array.shape == (108, 256, 256)
    assert head_ct.array.dtype == np.int16
    np.testing.assert_allclose(head_ct.spacing, [0.9570312, 0.9570312, 1.5], rtol=1e-6)
    assert (head_ct.modality, head_ct.units) == ("CT", "HU")
    assert head_ct.metadata["name"]
    assert head_ct.metadata["window_width"] > 0
    low, high = head_ct.metadata["scalar_range"]
    assert low <= head_ct.array.min() and head_ct.array.max() <= high


@pytest.mark.realdata
def test_head_ct_hounsfield_values(head_ct):
    array = head_ct.array
    corners = array[:, :12, :12]  # outside the head: air
    assert -1100 < np.median(corners) < -900
    assert np.percentile(array, 99.5) > 700  # skull
    assert array.max() < 4000


def head_masks(volume):
    """Head (largest tissue component) and the air enclosed by it (sinuses, nose, mastoid)."""
    tissue = volume.array > -300
    labels, count = ndimage.label(tissue)
    sizes = ndimage.sum(tissue, labels, range(1, count + 1))
    head = labels == 1 + int(np.argmax(sizes))  # drops the CT head-rest
    filled = np.stack([ndimage.binary_fill_holes(axial) for axial in head])
    enclosed_air = filled & (volume.array < -400)
    return head, enclosed_air


def centroid_world(volume, mask):
    k, j, i = np.nonzero(mask)
    return volume.index_to_world(np.stack([i, j, k], axis=-1).mean(axis=0))


@pytest.mark.realdata
def test_head_ct_anatomical_orientation(head_ct):
    head, enclosed_air = head_masks(head_ct)
    head_centre = centroid_world(head_ct, head)
    air_centre = centroid_world(head_ct, enclosed_air)
    # Paranasal sinuses and the nasal cavity lie in front of and below the brain:
    # anterior is -y in LPS, superior is +z.
    assert air_centre[1] < head_centre[1] - 20
    assert air_centre[2] < head_centre[2] - 10

    k, j, i = np.nonzero(head)
    points = head_ct.index_to_world(np.stack([i, j, k], axis=-1))
    nose_tip = points[np.argmin(points[:, 1])]  # most anterior point of the head
    assert nose_tip[2] < head_centre[2]  # the face is below the head's centre
    vertex = points[np.argmax(points[:, 2])]  # highest point of the head
    assert abs(vertex[0] - head_centre[0]) < 30 and abs(vertex[1] - head_centre[1]) < 40

    # The head narrows toward the vertex: the top slab holds far less tissue than the bottom.
    z = points[:, 2]
    assert np.count_nonzero(z > z.max() - 10) < 0.3 * np.count_nonzero(z < z.min() + 10)


# ---------------------------------------------------------------------------- the real-data helper
def test_realdata_helper_skips_or_fails_when_data_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOPLAN_INVESALIUS_CT", str(tmp_path / "absent.inv3"))
    monkeypatch.delenv("CRYOPLAN_REQUIRE_REALDATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent.inv3"):
        invesalius_ct_path()
    monkeypatch.setenv("CRYOPLAN_REQUIRE_REALDATA", "1")
    with pytest.raises(pytest.fail.Exception, match="CRYOPLAN_REQUIRE_REALDATA=1.*apt-get install invesalius-examples"):
        invesalius_ct_path()
    present = make_inv3(tmp_path / "present.inv3", np.zeros((1, 2, 2), np.int16))
    monkeypatch.setenv("CRYOPLAN_INVESALIUS_CT", str(present))
    assert invesalius_ct_path() == present
