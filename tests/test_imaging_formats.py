"""NIfTI, NRRD, MetaImage and VTI: geometry in LPS, exact round trips, modality, colour, 4D."""

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from planner.errors import InputError
from planner.imaging import read_volume
from planner.imaging.formats import (
    LPS_FROM_RAS,
    read_itk,
    read_vti,
    units_for_modality,
    write_volume,
)
from planner.volume import Volume, affine_from_geometry

# float32 carries 24 significant bits: NIfTI-1 stores its affine (sform, qform) that way.
FLOAT32_RELATIVE = 2.0**-23


def rotation(rx_deg, ry_deg, rz_deg) -> np.ndarray:
    """Rotation matrix from rotations about x, then y, then z (degrees)."""
    rx, ry, rz = np.radians([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    about_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


OBLIQUE_AFFINE = affine_from_geometry(
    (0.7, 1.3, 2.1), (-120.37, 33.123456789, 87.654321), rotation(20, -35, 50)
)


def ramp(shape=(4, 5, 6), dtype=np.int16) -> np.ndarray:
    """Distinct values per voxel, so any axis swap or flip changes the array."""
    return (np.arange(np.prod(shape)) - 37).reshape(shape).astype(dtype)


def read_any(path):
    return read_vti(path) if str(path).endswith(".vti") else read_itk(path)


def assert_affine_close(actual, expected, *, float32_storage=False):
    tolerance = 1e-6 + (FLOAT32_RELATIVE * np.abs(expected) if float32_storage else 0.0)
    assert np.all(np.abs(actual - expected) <= tolerance), actual - expected


# ---------------------------------------------------------------------------- round trips
SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".mha", ".vti"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_keeps_array_and_oblique_affine(tmp_path, suffix, dtype):
    array = ramp((4, 5, 6), dtype)
    if np.dtype(dtype).kind == "f":
        array = array * np.asarray(0.37, dtype)
    volume = Volume(array, OBLIQUE_AFFINE, modality="CT", units="HU")
    path = write_volume(volume, tmp_path / f"oblique{suffix}")
    back = read_any(path)
    assert back.array.dtype == array.dtype
    assert back.array.shape == array.shape
    np.testing.assert_array_equal(back.array, array)
    assert_affine_close(back.affine, OBLIQUE_AFFINE, float32_storage=suffix.startswith(".nii"))
    assert (back.modality, back.units) == ("CT", "HU")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".vti"])
def test_round_trip_is_exact_where_the_format_stores_doubles(tmp_path, suffix):
    volume = Volume(ramp(), OBLIQUE_AFFINE)
    back = read_any(write_volume(volume, tmp_path / f"exact{suffix}"))
    np.testing.assert_allclose(back.affine, OBLIQUE_AFFINE, rtol=0, atol=1e-9)


def test_nifti_affine_error_is_float32_rounding_only(tmp_path):
    volume = Volume(ramp(), OBLIQUE_AFFINE)
    back = read_itk(write_volume(volume, tmp_path / "a.nii"))
    error = np.abs(back.affine - OBLIQUE_AFFINE)
    assert error.max() > 0  # NIfTI-1 really is float32; if this ever fails, tighten the docs
    assert error.max() < 1e-5


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".vti"])
def test_sheared_affine_kept(tmp_path, suffix):
    sheared = OBLIQUE_AFFINE.copy()
    sheared[:3, 1] += 0.4 * sheared[:3, 0]  # j axis leans toward i: not orthogonal
    volume = Volume(ramp(), sheared)
    back = read_any(write_volume(volume, tmp_path / f"shear{suffix}"))
    assert_affine_close(back.affine, sheared, float32_storage=suffix.startswith(".nii"))


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("modality", ["CT", "US", "MR", "SEG", "OT"])
def test_modality_round_trip(tmp_path, suffix, modality):
    volume = Volume(ramp(dtype=np.uint8) % 50 + 20, np.eye(4), modality=modality)
    back = read_any(write_volume(volume, tmp_path / f"m{suffix}"))
    assert back.modality == modality
    assert back.units == units_for_modality(modality)


def test_units_for_modality():
    assert [units_for_modality(m) for m in ("CT", "ct", "SEG", "US", "MR", "OT", "")] == [
        "HU", "HU", "label", "", "", "", ""
    ]


def test_nifti_label_map_gets_label_intent(tmp_path):
    path = write_volume(Volume(ramp(dtype=np.uint8) % 4, np.eye(4), modality="SEG"), tmp_path / "l.nii")
    assert nib.load(path).header.get_intent()[0] == "label"


def test_bool_written_as_uint8(tmp_path):
    mask = ramp() % 3 == 0
    back = read_itk(write_volume(Volume(mask, np.eye(4)), tmp_path / "mask.nrrd"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.astype(np.uint8))


# ---------------------------------------------------------------------------- NIfTI vs nibabel
def nibabel_image(affine_ras, *, qform=None, sform=None, data=None):
    """A NIfTI-1 image with explicit qform/sform (``None`` = code 0)."""
    data = ramp((4, 5, 6)).transpose(2, 1, 0) if data is None else data
    image = nib.Nifti1Image(data, affine_ras)
    image.set_qform(qform, code=1 if qform is not None else 0)
    image.set_sform(sform, code=2 if sform is not None else 0)
    return image


def test_nifti_from_known_ras_affine_reads_to_expected_lps(tmp_path):
    ras = np.array(
        [[-0.8, 0.0, 0.0, 90.0],   # i toward the patient's left: -x in RAS
         [0.0, 0.9, 0.0, -126.0],  # j toward anterior: +y in RAS
         [0.0, 0.0, 2.5, -72.0],   # k toward superior
         [0.0, 0.0, 0.0, 1.0]]
    )
    data_ijk = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)  # nibabel order (i, j, k)
    path = tmp_path / "known.nii.gz"
    nib.save(nib.Nifti1Image(data_ijk, ras), path)
    volume = read_volume(path)
    expected_lps = np.array(
        [[0.8, 0.0, 0.0, -90.0],   # left is +x in LPS
         [0.0, -0.9, 0.0, 126.0],  # anterior is -y in LPS
         [0.0, 0.0, 2.5, -72.0],
         [0.0, 0.0, 0.0, 1.0]]
    )
    np.testing.assert_allclose(volume.affine, expected_lps, atol=1e-6)
    assert volume.shape_xyz == (3, 4, 5)
    # voxel (i, j, k) of nibabel is array[k, j, i] of the planner
    assert volume.array[4, 2, 1] == data_ijk[1, 2, 4]
    np.testing.assert_array_equal(volume.array, data_ijk.transpose(2, 1, 0))


QS_CASES = {
    "sform only": dict(qform=None, sform="oblique"),
    "qform only": dict(qform="oblique", sform=None),
    "both, different": dict(qform="plain", sform="oblique"),
    "sheared sform": dict(qform="plain", sform="sheared"),
    "both, same": dict(qform="oblique", sform="oblique"),
}


@pytest.mark.parametrize("case", QS_CASES)
def test_nifti_qform_sform_choice_agrees_with_nibabel(tmp_path, case):
    ras_oblique = LPS_FROM_RAS @ OBLIQUE_AFFINE
    affines = {
        "oblique": ras_oblique,
        "plain": affine_from_geometry((2, 2, 2), (1, 2, 3)),
        "sheared": ras_oblique + np.array([[0, 0.3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        None: None,
    }
    spec = QS_CASES[case]
    image = nib.Nifti1Image(ramp((4, 5, 6)).transpose(2, 1, 0), None)
    image.set_qform(affines[spec["qform"]], code=1 if spec["qform"] else 0)
    image.set_sform(affines[spec["sform"]], code=2 if spec["sform"] else 0)
    path = tmp_path / "qs.nii"
    nib.save(image, path)
    expected = LPS_FROM_RAS @ nib.load(path).affine
    volume = read_itk(path)
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
    assert volume.metadata["affine_source"] == ("sform" if spec["sform"] else "qform")


def test_nifti_geometry_agrees_with_simpleitk_where_itk_follows_the_standard(tmp_path):
    """An independent reader (ITK does its own RAS->LPS) gives the same geometry."""
    path = tmp_path / "both.nii"
    ras = LPS_FROM_RAS @ OBLIQUE_AFFINE
    nib.save(nibabel_image(ras, qform=ras, sform=ras), path)
    itk_image = sitk.ReadImage(str(path))
    itk_affine = affine_from_geometry(
        itk_image.GetSpacing(), itk_image.GetOrigin(), np.reshape(itk_image.GetDirection(), (3, 3))
    )
    volume = read_itk(path)
    np.testing.assert_allclose(volume.affine, itk_affine, atol=1e-5)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(itk_image))


def test_nifti_without_qform_or_sform_says_so(tmp_path):
    path = tmp_path / "bare.nii"
    nib.save(nibabel_image(np.eye(4)), path)
    volume = read_itk(path)
    np.testing.assert_allclose(volume.affine, LPS_FROM_RAS @ nib.load(path).affine)
    assert any("neither qform nor sform" in note for note in volume.metadata["notes"])


def test_nifti_scaling_applied_as_float32(tmp_path):
    image = nib.Nifti1Image(ramp((3, 4, 5)).transpose(2, 1, 0), np.eye(4))
    image.header.set_slope_inter(0.5, -1024.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    volume = read_itk(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, ramp((3, 4, 5)) * 0.5 - 1024.0)


def test_nifti_spatial_units_in_metres_become_mm(tmp_path):
    ras = affine_from_geometry((0.001, 0.002, 0.003), (0.01, 0.02, 0.03))
    image = nib.Nifti1Image(ramp().transpose(2, 1, 0), ras)
    image.header.set_xyzt_units(xyz="meter")
    path = tmp_path / "metres.nii"
    nib.save(image, path)
    volume = read_itk(path)
    np.testing.assert_allclose(volume.spacing, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(volume.origin, [-10.0, -20.0, 30.0])


def test_nifti_modality_from_description(tmp_path):
    image = nib.Nifti1Image(ramp().transpose(2, 1, 0), np.eye(4))
    image.header["descrip"] = b"exported; modality=US; probe L12"
    path = tmp_path / "us.nii"
    nib.save(image, path)
    assert read_itk(path).modality == "US"


def test_nifti_4d_refused_but_unit_fourth_axis_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(InputError, match=r"t\.nii.*4D image.*time series"):
        read_itk(tmp_path / "t.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), tmp_path / "one.nii")
    assert read_itk(tmp_path / "one.nii").shape_xyz == (4, 5, 6)


def test_nifti_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 3, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = 200, 100, 50
    rgb["G"][1, 2, 3] = 0
    path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    volume = read_itk(path)
    assert volume.array.shape == (4, 3, 2)
    np.testing.assert_allclose(volume.array[0, 0, 0], 0.299 * 200 + 0.587 * 100 + 0.114 * 50, rtol=1e-6)
    np.testing.assert_allclose(volume.array[3, 2, 1], 0.299 * 200 + 0.114 * 50, rtol=1e-6)


# ---------------------------------------------------------------------------- NRRD / MetaImage by hand
def test_nrrd_in_ras_space_converted_to_lps(tmp_path):
    array = ramp((3, 4, 5))  # [k, j, i]
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\n"
        "sizes: 5 4 3\nspace directions: (0,-1.5,0) (0.5,0,0) (0,0,2)\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\n"
        "space origin: (10,20,30)\nModality:=US\n\n"
    )
    path = tmp_path / "ras.nrrd"
    path.write_bytes(header.encode() + array.astype("<i2").tobytes())
    volume = read_volume(path)
    expected = np.array([[0, -0.5, 0, -10], [1.5, 0, 0, -20], [0, 0, 2, 30], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-12)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.modality == "US"


def test_nhdr_with_detached_gzip_data(tmp_path):
    array = ramp((3, 4, 5), np.float32)
    (tmp_path / "data.raw.gz").write_bytes(gzip.compress(array.astype("<f4").tobytes()))
    (tmp_path / "vol.nhdr").write_text(
        "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 5 4 3\n"
        "space directions: (0.5,0,0) (0,0.6,0) (0,0,0.7)\nendian: little\nencoding: gzip\n"
        "space origin: (1,2,3)\ndata file: data.raw.gz\n"
    )
    volume = read_volume(tmp_path / "vol.nhdr")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, [0.5, 0.6, 0.7])
    np.testing.assert_allclose(volume.origin, [1, 2, 3])


def test_mhd_with_detached_data_and_standard_modality_field(tmp_path):
    array = ramp((3, 4, 5), np.uint16)
    (tmp_path / "vol.raw").write_bytes(array.astype("<u2").tobytes())
    (tmp_path / "vol.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 0 1 0 -1 0 0 0 0 1\nOffset = 5 6 7\nElementSpacing = 0.25 0.5 1.5\n"
        "Modality = MET_MOD_US\nDimSize = 5 4 3\nElementType = MET_USHORT\nElementDataFile = vol.raw\n"
    )
    volume = read_volume(tmp_path / "vol.mhd")
    np.testing.assert_array_equal(volume.array, array)
    # MetaImage's TransformMatrix lists the direction column by column (the i axis
    # first): here i runs along +y and j along -x.
    direction = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(volume.affine, affine_from_geometry((0.25, 0.5, 1.5), (5, 6, 7), direction))
    assert volume.modality == "US"
    assert volume.units == ""


def test_rgb_nrrd_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 3, 4, 3), np.uint8)  # [k, j, i, c]
    rgb[...] = (10, 200, 30)
    header = (
        "NRRD0004\ntype: uchar\ndimension: 4\nspace: left-posterior-superior\nsizes: 3 4 3 2\n"
        "space directions: none (1,0,0) (0,1,0) (0,0,1)\nkinds: RGB-color domain domain domain\n"
        "encoding: raw\nspace origin: (0,0,0)\n\n"
    )
    path = tmp_path / "rgb.nrrd"
    path.write_bytes(header.encode() + rgb.tobytes())
    volume = read_itk(path)
    assert volume.array.shape == (2, 3, 4)
    np.testing.assert_allclose(volume.array, 0.299 * 10 + 0.587 * 200 + 0.114 * 30, rtol=1e-6)
    assert any("luminance" in note for note in volume.metadata["notes"])


def test_two_component_image_refused(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((2, 3, 4, 2), np.float32), isVector=True)
    sitk.WriteImage(image, str(tmp_path / "field.mha"))
    with pytest.raises(InputError, match=r"field\.mha.*2 components per voxel"):
        read_itk(tmp_path / "field.mha")


def test_4d_nrrd_refused(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 2, 3, 4), np.int16), isVector=False)  # 4D scalar
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "cine.nrrd"))
    with pytest.raises(InputError, match=r"cine\.nrrd.*4D image of size 4x3x2x3"):
        read_itk(tmp_path / "cine.nrrd")


def test_2d_image_becomes_single_slice(tmp_path):
    image = sitk.GetImageFromArray(ramp((1, 4, 5))[0])
    image.SetSpacing((0.3, 0.4))
    image.SetOrigin((7.0, 8.0))
    sitk.WriteImage(image, str(tmp_path / "plane.nrrd"))
    volume = read_itk(tmp_path / "plane.nrrd")
    assert volume.array.shape == (1, 4, 5)
    np.testing.assert_allclose(volume.affine, affine_from_geometry((0.3, 0.4, 1.0), (7, 8, 0)))


# ---------------------------------------------------------------------------- modality choices
def test_label_map_not_guessed_but_noted(tmp_path):
    labels = (ramp((6, 7, 8), np.uint8) % 5).astype(np.uint8)
    path = write_volume(Volume(labels, np.eye(4)), tmp_path / "labels.nrrd")
    volume = read_volume(path)
    assert volume.modality == "OT"
    assert any("label map" in note and "5 distinct values" in note for note in volume.metadata["notes"])
    grey = read_volume(write_volume(Volume(ramp((6, 7, 8)), np.eye(4)), tmp_path / "grey.nrrd"))
    assert not any("label map" in note for note in grey.metadata["notes"])


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_3d_ultrasound_loads_and_modality_override_sets_us(tmp_path, suffix):
    echo = np.random.default_rng(3).integers(0, 255, size=(8, 9, 10)).astype(np.uint8)
    path = write_volume(Volume(echo, OBLIQUE_AFFINE, modality="OT"), tmp_path / f"echo{suffix}")
    plain = read_volume(path)
    assert plain.modality == "OT"
    volume = read_volume(path, modality="US")
    assert volume.modality == "US"
    np.testing.assert_array_equal(volume.array, echo)
    assert_affine_close(volume.affine, OBLIQUE_AFFINE, float32_storage=suffix.startswith(".nii"))


# ---------------------------------------------------------------------------- VTI
def test_vti_written_by_pyvista_keeps_direction(tmp_path):
    import pyvista as pv

    volume = Volume(ramp(), OBLIQUE_AFFINE)
    grid = volume.to_pyvista()
    grid.save(tmp_path / "pv.vti")
    back = read_vti(tmp_path / "pv.vti")
    np.testing.assert_allclose(back.affine, OBLIQUE_AFFINE, atol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)
    # and pyvista reads cryoplan's own files back with the direction too
    path = write_volume(volume, tmp_path / "ours.vti")
    np.testing.assert_allclose(pv.read(path).direction_matrix, volume.direction, atol=1e-12)


def test_vti_extent_not_starting_at_zero(tmp_path):
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkIOXML import vtkXMLImageDataWriter

    array = ramp((3, 4, 5), np.float32)
    image = vtkImageData()
    image.SetExtent(2, 6, 1, 4, 3, 5)  # i from 2, j from 1, k from 3
    image.SetSpacing(0.5, 1.0, 2.0)
    image.SetOrigin(10.0, 20.0, 30.0)
    image.SetDirectionMatrix(0, -1, 0, 1, 0, 0, 0, 0, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(array.ravel()))
    writer = vtkXMLImageDataWriter()
    writer.SetFileName(str(tmp_path / "shifted.vti"))
    writer.SetInputData(image)
    writer.Write()
    volume = read_vti(tmp_path / "shifted.vti")
    np.testing.assert_array_equal(volume.array, array)
    # world of the first voxel = origin + direction @ (spacing * first index)
    first_point = np.array(image.GetPoint(0))
    np.testing.assert_allclose(volume.index_to_world([0, 0, 0]), first_point, atol=1e-12)
    np.testing.assert_allclose(volume.index_to_world([4, 3, 2]), image.GetPoint(image.GetNumberOfPoints() - 1))


def test_vti_with_cell_data_only_refused(tmp_path):
    import pyvista as pv

    grid = pv.ImageData(dimensions=(3, 3, 3))
    grid.cell_data["c"] = np.arange(grid.n_cells, dtype=float)
    grid.save(tmp_path / "cells.vti")
    with pytest.raises(InputError, match=r"cells\.vti.*cell data only"):
        read_vti(tmp_path / "cells.vti")


# ---------------------------------------------------------------------------- writer refusals
def test_write_refusals(tmp_path):
    volume = Volume(ramp(), np.eye(4))
    with pytest.raises(InputError, match=r"x\.png.*unknown output format.*\.nrrd"):
        write_volume(volume, tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        write_volume(volume, tmp_path / "missing" / "x.nrrd")
    cine = Volume(ramp(), np.eye(4), frame_times=np.arange(4) * 0.1)
    with pytest.raises(InputError, match="cine loop"):
        write_volume(cine, tmp_path / "cine.nrrd")
    with pytest.raises(InputError, match="complex"):
        write_volume(Volume(ramp().astype(np.complex64), np.eye(4)), tmp_path / "c.nrrd")


def test_nifti2_keeps_a_float64_affine(tmp_path):
    ras = LPS_FROM_RAS @ OBLIQUE_AFFINE
    path = tmp_path / "two.nii"
    nib.save(nib.Nifti2Image(ramp().transpose(2, 1, 0), ras), path)
    volume = read_itk(path)
    assert volume.metadata["format"] == "NIfTI-2"
    np.testing.assert_allclose(volume.affine, OBLIQUE_AFFINE, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(volume.array, ramp())


def test_2d_nifti_becomes_single_slice(tmp_path):
    plane = np.arange(12, dtype=np.float32).reshape(3, 4)  # nibabel (i, j)
    path = tmp_path / "plane.nii"
    nib.save(nib.Nifti1Image(plane, affine_from_geometry((0.5, 0.25, 1.0), (0, 0, 0))), path)
    volume = read_itk(path)
    assert volume.array.shape == (1, 4, 3)
    assert volume.array[0, 2, 1] == plane[1, 2]
    np.testing.assert_allclose(volume.spacing[:2], [0.5, 0.25])
