"""DICOM series and multi-frame CT/MR: geometry, ordering, rescale, imperfect series, bad input.

Known answers come from volumes written by ``write_dicom_series`` (whose files are checked
tag by tag), from pydicom's own test files, and from the real head CT of Debian's
``invesalius-examples`` (skipped when absent unless ``CRYOPLAN_REQUIRE_REALDATA=1``).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from realdata import invesalius_ct_path, require_realdata

from planner.errors import InputError
from planner.imaging import read_volume
from planner.imaging.dicom import (
    DicomWarning,
    is_dicom_file,
    list_series,
    read_dicom_file,
    read_dicom_folder,
)
from planner.imaging.dicom_write import write_dicom_series
from planner.volume import Volume, affine_from_geometry


# --------------------------------------------------------------------------- helpers
def pydicom_file(name: str) -> Path:
    """A file from pydicom's bundled test files or from the pydicom-data package."""
    found = get_testdata_file(name, download=False)
    return require_realdata(
        Path(found) if found else None,
        f"pydicom test file {name}",
        how_to_install="pip install pydicom-data",
    )


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` by ``degrees`` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def linear_volume(shape=(6, 5, 4), spacing=(0.5, 0.8, 2.0), origin=(10.0, -20.0, 30.0),
                  direction=None, modality="CT") -> Volume:
    """A volume whose value is ``100 k + 7 j - 3 i - 500`` (int16): linear in every axis,
    so linear interpolation along k reproduces missing slices exactly."""
    nk, nj, ni = shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    array = (100 * k + 7 * j - 3 * i - 500).astype(np.int16)
    return Volume(array, affine_from_geometry(spacing, origin, direction), modality=modality)


def flipped_k(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels with the k axis reversed: ``(array, affine)``."""
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, 3] + (volume.array.shape[0] - 1) * volume.affine[:3, 2]
    affine[:3, 2] = -volume.affine[:3, 2]
    return volume.array[::-1], affine


def edit(path: Path, **values) -> None:
    """Rewrite DICOM tags of one file in place."""
    dataset = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)


def ds_list(values) -> list[str]:
    from pydicom.valuerep import format_number_as_ds

    return [format_number_as_ds(float(v)) for v in values]


def read_quietly(path, **options) -> tuple[Volume, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(path, **options)
    return volume, [w for w in caught if issubclass(w.category, DicomWarning)]


def one_line_error(path, *fragments, reader=read_volume, **options) -> str:
    with pytest.raises(InputError) as caught:
        reader(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    assert Path(path).name in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


# --------------------------------------------------------------------------- writer
def test_writer_tags_follow_the_affine(tmp_path):
    """PixelSpacing is [row spacing, column spacing]; IOP = unit i then unit j axis."""
    direction = rotation([1, 2, 3], 25)
    volume = linear_volume(spacing=(0.5, 0.8, 2.0), direction=direction)
    paths = write_dicom_series(volume, tmp_path, series_description="known")
    assert [p.name for p in paths] == [f"slice_{k:04d}.dcm" for k in range(1, 7)]
    first, last = pydicom.dcmread(paths[0]), pydicom.dcmread(paths[-1])
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([0.8, 0.5])
    assert (first.Rows, first.Columns) == (5, 4)
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient],
                               np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-12)
    np.testing.assert_allclose([float(v) for v in last.ImagePositionPatient],
                               volume.affine[:3, 3] + 5 * volume.affine[:3, 2], atol=1e-9)
    assert float(first.SliceThickness) == pytest.approx(2.0)
    # CT stored the scanner way: unsigned values with an integer intercept.
    assert first.PixelRepresentation == 0 and float(first.RescaleIntercept) == -509  # min of 100k + 7j - 3i - 500
    stored = first.pixel_array.astype(int) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(stored, volume.array[0])
    assert first.Modality == "CT" and first.SeriesDescription == "known"


def test_writer_shuffled_names_say_nothing_about_order(tmp_path):
    paths = write_dicom_series(linear_volume(), tmp_path, shuffle_names=True, rng=3)
    names = [p.name for p in paths]
    assert all("." not in name for name in names)
    assert names != sorted(names)
    again = write_dicom_series(linear_volume(), tmp_path / "again", shuffle_names=True, rng=3)
    assert [p.name for p in again] == names  # reproducible with the same seed


def test_writer_refuses_sheared_in_plane_axes(tmp_path):
    volume = linear_volume()
    volume.affine[:3, 1] += 0.3 * volume.affine[:3, 0]
    with pytest.raises(ValueError, match="perpendicular"):
        write_dicom_series(volume, tmp_path)


# --------------------------------------------------------------------------- detection
def test_is_dicom_file(tmp_path):
    paths = write_dicom_series(linear_volume(shape=(1, 3, 3)), tmp_path / "with")
    assert is_dicom_file(paths[0])
    # The same data set without the 128-byte preamble and DICM marker.
    bare = tmp_path / "bare"
    dataset = pydicom.dcmread(paths[0])
    dataset.preamble = None
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(bare, dataset, implicit_vr=False, little_endian=True)
    assert bare.read_bytes()[:2] == b"\x08\x00"  # starts at group 0008: no preamble, no meta
    assert is_dicom_file(bare)
    np.testing.assert_array_equal(read_volume(bare).array, read_volume(paths[0]).array)
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 50)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(np.random.default_rng(0).bytes(3000))
    assert not is_dicom_file(text)
    assert not is_dicom_file(empty)
    assert not is_dicom_file(noise)
    assert not is_dicom_file(tmp_path / "missing")
    assert is_dicom_file(pydicom_file("ExplVR_LitEndNoMeta.dcm"))  # no preamble, no meta


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("degrees", [0.0, 30.0])
def test_series_round_trip_ascending(tmp_path, degrees):
    direction = rotation([0.3, -1, 0.5], degrees)
    volume = linear_volume(shape=(7, 6, 5), spacing=(0.6, 0.9, 1.25), direction=direction)
    write_dicom_series(volume, tmp_path, shuffle_names=True, rng=1)
    read, found = read_quietly(tmp_path)
    assert found == []
    assert read.array.dtype == np.int16 and read.units == "HU" and read.modality == "CT"
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-9)
    assert read.metadata["notes"] == []


def test_descending_positions_give_k_along_the_normal(tmp_path):
    """A left-handed source (k against row x column) is read back with k reversed:
    the same voxels at the same world points."""
    volume = linear_volume(shape=(5, 4, 3), direction=rotation([1, 1, 0], 40) @ np.diag([1, 1, -1]))
    write_dicom_series(volume, tmp_path, shuffle_names=True, rng=2)
    read = read_volume(tmp_path)
    array, affine = flipped_k(volume)
    np.testing.assert_array_equal(read.array, array)
    np.testing.assert_allclose(read.affine, affine, atol=1e-9)
    assert np.linalg.det(read.affine[:3, :3]) > 0
    centres = volume.index_to_world(np.argwhere(np.ones((3, 4, 5)))[:, [0, 1, 2]])
    np.testing.assert_array_equal(read.sample(centres, order=0), volume.sample(centres, order=0))


def test_order_ignores_instance_number_and_names(tmp_path):
    """Scramble InstanceNumber and name the files against the true order."""
    volume = linear_volume(shape=(6, 3, 3))
    paths = write_dicom_series(volume, tmp_path)
    scrambled = [4, 1, 6, 2, 5, 3]
    for path, number in zip(paths, scrambled):
        edit(path, InstanceNumber=number)
        path.rename(path.with_name(f"z{7 - number}.dcm"))
    read = read_volume(tmp_path)
    np.testing.assert_array_equal(read.array, volume.array)


def test_gantry_tilt_keeps_the_shear(tmp_path):
    volume = linear_volume(shape=(5, 4, 4), spacing=(0.5, 0.5, 2.0))
    paths = write_dicom_series(volume, tmp_path)
    shift = np.tan(np.radians(10)) * 2.0  # each slice moves along y by 2 mm * tan(10 deg)
    positions = []
    for k, path in enumerate(paths):
        position = volume.affine[:3, 3] + k * volume.affine[:3, 2] + [0, k * shift, 0]
        positions.append(position)
        edit(path, ImagePositionPatient=ds_list(position))
    read = read_volume(tmp_path)
    world = read.index_to_world([[0, 0, k] for k in range(5)])
    np.testing.assert_allclose(world, positions, atol=1e-6)
    assert any("gantry tilt 10.00 deg" in note for note in read.metadata["notes"])
    np.testing.assert_array_equal(read.array, volume.array)


# --------------------------------------------------------------------------- rescale
def test_integer_rescale_that_overflows_int16_becomes_float32(tmp_path):
    volume = linear_volume(shape=(3, 4, 4))
    volume.array = volume.array.astype(np.int32)
    volume.array[2] += 40000  # past int16 once rescaled, still an integer map
    write_dicom_series(volume, tmp_path)
    read = read_volume(tmp_path)
    assert read.array.dtype == np.float32
    np.testing.assert_array_equal(read.array, volume.array.astype(np.float32))


def test_per_slice_float_rescale(tmp_path):
    rng = np.random.default_rng(5)
    array = rng.normal(size=(4, 6, 5)) * np.array([1.0, 10.0, 100.0, 1000.0])[:, None, None]
    volume = Volume(array, np.diag([1.0, 1.0, 1.0, 1.0]), modality="MR")
    paths = write_dicom_series(volume, tmp_path)
    slopes = [float(pydicom.dcmread(p).RescaleSlope) for p in paths]
    assert len(set(slopes)) == 4  # one map per slice
    read = read_volume(tmp_path)
    assert read.array.dtype == np.float32 and read.modality == "MR" and read.units == ""
    for k in range(4):
        span = np.ptp(array[k])
        np.testing.assert_allclose(read.array[k], array[k], atol=span / 65535 + 1e-6 * span)


def test_unsigned_identity_rescale_keeps_stored_type(tmp_path):
    array = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 1000
    volume = Volume(array, np.eye(4), modality="MR")
    write_dicom_series(volume, tmp_path)
    read = read_volume(tmp_path)
    assert read.array.dtype == np.uint16
    np.testing.assert_array_equal(read.array, array)


# --------------------------------------------------------------------------- imperfect series
def test_missing_slice_is_resampled_with_a_note_and_warning(tmp_path):
    volume = linear_volume(shape=(8, 4, 3), spacing=(0.7, 0.7, 1.5))
    paths = write_dicom_series(volume, tmp_path)
    paths[3].unlink()
    read, found = read_quietly(tmp_path)
    assert read.array.shape == volume.array.shape  # back on the 1.5 mm grid
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-9)
    # Linear data: interpolating across the gap restores the missing slice exactly.
    np.testing.assert_array_equal(read.array, volume.array)
    (note,) = [n for n in read.metadata["notes"] if "resampled" in n]
    assert "1 missing slice" in note
    assert len(found) == 1 and "resampled" in str(found[0].message)


def test_uneven_spacing_is_resampled_to_the_median_step(tmp_path):
    depths = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.5, 9.0])  # steps 1 (x4) and 2.5 (x2)
    volume = linear_volume(shape=(7, 3, 3), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    paths = write_dicom_series(volume, tmp_path)
    for path, depth in zip(paths, depths):
        edit(path, ImagePositionPatient=ds_list([0, 0, depth]))
    # Values follow depth (not slice number) so that interpolation has a known answer.
    for path, depth in zip(paths, depths):
        dataset = pydicom.dcmread(path)
        stored = dataset.pixel_array.astype(np.int32) + int(100 * depth) - 100 * int(dataset.InstanceNumber - 1)
        dataset.PixelData = stored.astype("<u2").tobytes()
        dataset.save_as(path, enforce_file_format=True)
    read, found = read_quietly(tmp_path)
    assert read.array.shape[0] == 10  # 0..9 mm every 1 mm
    assert read.spacing[2] == pytest.approx(1.0)
    expected = volume.array[0].astype(float)[None] + 100 * np.arange(10)[:, None, None]
    np.testing.assert_array_equal(read.array, expected)
    assert found and "uneven slice spacing" in str(found[0].message)


def test_small_jitter_is_accepted_without_resampling(tmp_path):
    volume = linear_volume(shape=(6, 3, 3), spacing=(1.0, 1.0, 1.5), origin=(0, 0, 0))
    paths = write_dicom_series(volume, tmp_path)
    jitter = [0.0, 0.03, -0.02, 0.04, -0.03, 0.0]  # < 5 % of 1.5 mm
    for k, (path, delta) in enumerate(zip(paths, jitter)):
        edit(path, ImagePositionPatient=ds_list([0, 0, 1.5 * k + delta]))
    read, found = read_quietly(tmp_path)
    assert found == []
    np.testing.assert_array_equal(read.array, volume.array)
    assert any("accepted as uniform" in note for note in read.metadata["notes"])


def test_duplicate_positions_are_reported(tmp_path):
    volume = linear_volume(shape=(5, 3, 3))
    paths = write_dicom_series(volume, tmp_path)
    shutil.copy(paths[2], tmp_path / "copy_of_slice_3")  # the same instance twice
    other = tmp_path / "rescan.dcm"  # a different image at slice 1's position
    shutil.copy(paths[1], other)
    dataset = pydicom.dcmread(other)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    dataset.InstanceNumber = 99
    dataset.PixelData = np.zeros((3, 3), "<u2").tobytes()
    dataset.save_as(other, enforce_file_format=True)
    read, found = read_quietly(tmp_path)
    np.testing.assert_array_equal(read.array, volume.array)  # lowest InstanceNumber kept
    (note,) = [n for n in read.metadata["notes"] if "share a position" in n]
    assert note.startswith("2 slice(s)") and "1 are copies of the same instance" in note
    assert len(found) == 1


def test_mixed_orientation_is_an_error(tmp_path):
    paths = write_dicom_series(linear_volume(shape=(4, 3, 3)), tmp_path)
    edit(paths[2], ImageOrientationPatient=ds_list([1, 0, 0, 0, 0, -1]))
    one_line_error(tmp_path, "mixes slice orientations", "axial", "coronal")


def test_mixed_pixel_spacing_is_an_error(tmp_path):
    paths = write_dicom_series(linear_volume(shape=(4, 3, 3)), tmp_path)
    edit(paths[1], PixelSpacing=ds_list([0.9, 0.9]))
    one_line_error(tmp_path, "mixes pixel spacings")


def test_slices_off_one_line_are_an_error(tmp_path):
    paths = write_dicom_series(linear_volume(shape=(4, 3, 3), spacing=(1, 1, 2), origin=(0, 0, 0)), tmp_path)
    edit(paths[2], ImagePositionPatient=ds_list([5.0, 0, 4.0]))  # slid 5 mm sideways
    one_line_error(tmp_path, "do not lie on one line")


# --------------------------------------------------------------------------- folders
def test_list_series_and_selection(tmp_path):
    big = linear_volume(shape=(6, 4, 4))
    small = linear_volume(shape=(3, 2, 2), direction=rotation([0, 1, 0], 90))
    write_dicom_series(big, tmp_path / "a", series_uid="1.2.3.1", series_description="big")
    write_dicom_series(small, tmp_path / "b" / "deeper", series_uid="1.2.3.2",
                       series_description="small", modality="MR", shuffle_names=True, rng=0)
    (tmp_path / "README.txt").write_text("stray text file\n")
    shutil.copy(pydicom_file("reportsi.dcm"), tmp_path / "report")  # SR: not an image
    shutil.copy(pydicom_file("DICOMDIR"), tmp_path / "DICOMDIR")

    series = list_series(tmp_path)
    assert [s.series_uid for s in series] == ["1.2.3.1", "1.2.3.2"]
    assert [(s.n_files, s.n_frames, s.modality) for s in series] == [(6, 6, "CT"), (3, 3, "MR")]
    assert series[0].description == "big" and series[0].orientation == "axial"
    assert series[1].orientation == "sagittal"
    assert (series[0].rows, series[0].columns) == (4, 4)
    assert series[0].to_dict()["patient_id"] == "cryoplan"

    default = read_volume(tmp_path)
    assert default.metadata["series_uid"] == "1.2.3.1"
    assert [s["series_uid"] for s in default.metadata["series"]] == ["1.2.3.1", "1.2.3.2"]
    chosen = read_volume(tmp_path, series_uid="1.2.3.2")
    assert chosen.modality == "MR" and chosen.metadata["series_description"] == "small"
    np.testing.assert_allclose(chosen.affine, small.affine, atol=1e-9)
    message = one_line_error(tmp_path, "9.9.9", "1.2.3.1", "1.2.3.2", series_uid="9.9.9")
    assert "big" in message and "small" in message


def test_empty_folder(tmp_path):
    one_line_error(tmp_path, "empty folder")


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "b.csv").write_text("1,2,3\n")
    one_line_error(tmp_path, "no DICOM image series", "2 not DICOM")


def test_folder_with_only_dicomdir_and_report(tmp_path):
    shutil.copy(pydicom_file("DICOMDIR"), tmp_path / "DICOMDIR")
    shutil.copy(pydicom_file("reportsi.dcm"), tmp_path / "report.dcm")
    message = one_line_error(tmp_path, "no DICOM image series", "2 DICOM without images")
    assert "DICOMDIR" in message and "SR" in message
    assert list_series(tmp_path) == []


def test_truncated_file_in_a_series_is_left_out(tmp_path):
    volume = linear_volume(shape=(6, 4, 4), spacing=(1, 1, 1))
    paths = write_dicom_series(volume, tmp_path)
    content = paths[4].read_bytes()
    paths[4].write_bytes(content[:-10])
    read, found = read_quietly(tmp_path)
    notes = read.metadata["notes"]
    assert any("left out" in n and paths[4].name in n and "truncated" in n for n in notes)
    np.testing.assert_array_equal(read.array, volume.array)  # the gap is interpolated
    assert len(found) == 2  # the file left out, and the resampling


def test_files_cut_inside_the_header(tmp_path):
    """pydicom reads a cut header without complaint; the reader must not."""
    volume = linear_volume(shape=(4, 3, 3))
    paths = write_dicom_series(volume, tmp_path / "series")
    content = paths[0].read_bytes()
    (tmp_path / "series" / "cut_early.dcm").write_bytes(content[:150])  # inside the meta group
    (tmp_path / "series" / "cut_later.dcm").write_bytes(content[:600])  # after the SOP class
    read = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(read.array, volume.array)
    (note,) = [n for n in read.metadata["notes"] if "unreadable" in n]
    assert note.startswith("2 DICOM file(s)") and "cut_early.dcm" in note and "cut_later.dcm" in note
    one_line_error(tmp_path / "series" / "cut_early.dcm", "corrupt or truncated")
    one_line_error(tmp_path / "series" / "cut_later.dcm", "truncated", "CT Image Storage")


def test_single_truncated_file_is_an_error(tmp_path):
    (path,) = write_dicom_series(linear_volume(shape=(1, 8, 8)), tmp_path)
    path.write_bytes(path.read_bytes()[:-30])
    one_line_error(path, "truncated")
    one_line_error(pydicom_file("MR_truncated.dcm"), "truncated", "8130 of 8192 bytes")


def test_file_without_pixel_data_is_an_error():
    one_line_error(pydicom_file("reportsi.dcm"), "no pixel data", "SR")
    one_line_error(pydicom_file("DICOMDIR"), "DICOMDIR")


def test_undecodable_compression_is_named(tmp_path):
    (path,) = write_dicom_series(linear_volume(shape=(1, 8, 8)), tmp_path)
    dataset = pydicom.dcmread(path)
    from pydicom.encaps import encapsulate

    dataset.PixelData = encapsulate([b"\0\0\1\xb3" + b"\0" * 60])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    dataset.save_as(path, enforce_file_format=True)
    one_line_error(path, "MPEG2", "1.2.840.10008.1.2.4.100", "cannot be decoded")
    one_line_error(tmp_path, "MPEG2", "cannot be decoded")


def test_series_too_large_for_memory(tmp_path, monkeypatch):
    write_dicom_series(linear_volume(shape=(20, 48, 64)), tmp_path)
    monkeypatch.setenv("CRYOPLAN_MAX_MEMORY_BYTES", "100000")
    one_line_error(tmp_path, "64x48x20", "memory")  # 122880 bytes of int16 > 80 % of 100 kB


def test_not_a_folder_or_file(tmp_path):
    one_line_error(tmp_path / "missing", "no such", reader=read_dicom_folder)
    text = tmp_path / "a.txt"
    text.write_text("x")
    one_line_error(text, "not a folder", reader=read_dicom_folder)
    one_line_error(text, "not a DICOM file", reader=read_dicom_file)


# --------------------------------------------------------------------------- single files
def test_classic_ct_slice():
    path = pydicom_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    volume = read_volume(path)
    assert volume.array.shape == (1, 128, 128) and volume.array.dtype == np.int16
    expected = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], expected)
    assert volume.units == "HU"
    np.testing.assert_allclose(volume.origin, [float(v) for v in dataset.ImagePositionPatient])
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    np.testing.assert_allclose(volume.spacing, [column_spacing, row_spacing, float(dataset.SliceThickness)])


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
     "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_mr_encodings_agree(name, capfd):
    """Big endian, implicit VR, RLE, JPEG 2000 (pydicom) and JPEG-LS (GDCM fallback)."""
    reference = read_volume(pydicom_file("MR_small.dcm"))
    volume = read_volume(pydicom_file(name))
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_allclose(volume.affine, reference.affine)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # GDCM kept quiet


def test_truncated_compressed_file_is_an_error():
    one_line_error(pydicom_file("emri_small_jpeg_2k_lossless_too_short.dcm"), "truncated")


def test_enhanced_ct_per_frame_positions():
    """eCT_Supplemental: 2 frames, IOP rows along -x so the normal is -z; frames sorted
    along it, PixelValueTransformation applied."""
    path = pydicom_file("eCT_Supplemental.dcm")
    dataset = pydicom.dcmread(path)
    frames = dataset.pixel_array.astype(np.int32) - 1024
    positions = [
        np.array([float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient])
        for g in dataset.PerFrameFunctionalGroupsSequence
    ]
    volume = read_volume(path)
    assert volume.array.shape == (2, 512, 512) and volume.array.dtype == np.int16
    assert volume.units == "HU"
    np.testing.assert_allclose(volume.direction[:, 2], [0, 0, -1], atol=1e-9)
    # Each stored frame appears at its own plane position.
    for frame, position in zip(frames, positions):
        k = int(round(volume.world_to_index(position)[2]))
        np.testing.assert_allclose(volume.index_to_world([0, 0, k]), position, atol=1e-6)
        np.testing.assert_array_equal(volume.array[k], frame)
    assert volume.spacing == pytest.approx([0.388672, 0.388672, 10.0])


def test_enhanced_mr_without_functional_groups():
    """emri_small has no plane positions at all: frames kept in order, with a note."""
    path = pydicom_file("emri_small.dcm")
    dataset = pydicom.dcmread(path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, dataset.pixel_array)
    notes = " ".join(volume.metadata["notes"])
    assert "uncalibrated" in notes and "no geometry" in notes
    for other in ("emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_volume(pydicom_file(other)).array, volume.array)


def test_multi_frame_with_grid_offsets():
    path = pydicom_file("rtdose.dcm")
    dataset = pydicom.dcmread(path)
    volume = read_volume(path)
    offsets = np.array([float(v) for v in dataset.GridFrameOffsetVector])
    assert volume.array.shape == (15, 10, 10)
    assert volume.spacing[2] == pytest.approx(abs(offsets[1] - offsets[0]))
    np.testing.assert_array_equal(volume.array, dataset.pixel_array[np.argsort(offsets)])


# --------------------------------------------------------------------------- real head CT
@pytest.fixture(scope="module")
def head_ct_folder(tmp_path_factory):
    """The real head CT written as an oblique, descending, shuffled series, next to a
    second smaller series and a stray text file."""
    source = read_volume(invesalius_ct_path())
    folder = tmp_path_factory.mktemp("head_ct")
    tilt = np.eye(4)
    tilt[:3, :3] = rotation([1.0, 0.4, 0.2], 23.0)
    tilt[:3, 3] = [12.5, -40.0, 7.25]
    oblique = Volume(source.array, tilt @ source.affine, modality="CT",
                     metadata={"patient_name": "Head^Example", "patient_id": "inv3"})
    # The inv3 affine is diag(sx, -sy, sz): k runs against row x column, i.e. the slice
    # positions descend along the DICOM normal, as the test wants.
    assert np.linalg.det(oblique.affine[:3, :3]) < 0
    write_dicom_series(oblique, folder, series_uid="1.2.826.0.1.3680043.10.1.1",
                       series_description="head oblique", shuffle_names=True, rng=11)
    small = Volume(source.array[::8, ::4, ::4].copy(),
                   affine_from_geometry(source.spacing * [4, 4, 8], (-100.0, -90.0, 20.0)),
                   modality="CT")
    write_dicom_series(small, folder, series_uid="1.2.826.0.1.3680043.10.1.2",
                       series_description="head small", shuffle_names=True, rng=12)
    (folder / "readme.txt").write_text("not DICOM\n")
    return folder, oblique, small


def test_real_head_ct_oblique_descending_shuffled(head_ct_folder):
    folder, oblique, small = head_ct_folder
    volume, found = read_quietly(folder)
    assert found == []
    assert volume.metadata["series_uid"].endswith(".1.1")
    assert volume.metadata["patient_name"] == "Head^Example"
    assert volume.array.dtype == np.int16 and volume.units == "HU"
    array, affine = flipped_k(oblique)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(volume.array, array)
    # HU at world points: voxel centres of the source, sampled nearest, must be identical.
    rng = np.random.default_rng(0)
    ijk = rng.integers(0, oblique.shape_xyz, size=(500, 3))
    world = oblique.index_to_world(ijk)
    expected = oblique.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    np.testing.assert_array_equal(volume.sample(world, order=0), expected)
    assert expected.min() < -500 and expected.max() > 500  # air and bone both sampled
    assert [s["n_frames"] for s in volume.metadata["series"]] == [108, 14]
    assert volume.metadata["series"][0]["orientation"].startswith("oblique")


def test_real_head_ct_second_series(head_ct_folder):
    folder, oblique, small = head_ct_folder
    volume = read_volume(folder, series_uid="1.2.826.0.1.3680043.10.1.2")
    np.testing.assert_array_equal(volume.array, small.array)
    np.testing.assert_allclose(volume.affine, small.affine, atol=1e-6)
    assert volume.metadata["series_description"] == "head small"
