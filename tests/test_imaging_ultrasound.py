"""Ultrasound and other 2D DICOM: region calibration, cine timing, colour to grey.

Synthetic files (built here with pydicom) give exact answers; pydicom's test files and
the pydicom-data package give real scanner output (the latter skipped when absent unless
``CRYOPLAN_REQUIRE_REALDATA=1``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from realdata import require_realdata

from planner.errors import InputError
from planner.imaging import read_volume

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def pydicom_file(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    return require_realdata(
        Path(found) if found else None,
        f"pydicom test file {name}",
        how_to_install="pip install pydicom-data",
    )


def luma(rgb) -> np.ndarray:
    """BT.601 luma, rounded: the grey the reader should give for an RGB colour."""
    rgb = np.asarray(rgb, dtype=float)
    return np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)


def region(x0, y0, x1, y1, *, delta_x_cm, delta_y_cm, units=(3, 3), spatial_format=1) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = 1
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta_x_cm, delta_y_cm
    return item


def write_us(path: Path, pixels: np.ndarray, *, photometric="MONOCHROME2", regions=(),
             **extra) -> Path:
    """A native ultrasound file: ``pixels`` (frames, rows, cols[, 3]) uint8, or already in
    the stored layout when ``extra`` says so (palette, 4:2:2)."""
    n_frames, rows, columns = pixels.shape[:3]
    samples = 3 if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") else 1
    sop_class = US_MULTIFRAME if n_frames > 1 else US_IMAGE
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, uid
    dataset.Modality = "US"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SamplesPerPixel = samples
    dataset.PhotometricInterpretation = photometric
    if samples == 3:
        dataset.PlanarConfiguration = 0
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    if n_frames > 1:
        dataset.NumberOfFrames = n_frames
    if regions:
        dataset.SequenceOfUltrasoundRegions = list(regions)
    for keyword, value in extra.items():
        if keyword != "pixel_bytes":
            setattr(dataset, keyword, value)
    dataset.PixelData = extra.get("pixel_bytes", np.ascontiguousarray(pixels, np.uint8).tobytes())
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def colour_image() -> np.ndarray:
    """(1, 6, 8, 3) uint8: pure primaries, greys and random colours."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(1, 6, 8, 3), dtype=np.uint8)
    rgb[0, 0, :4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
    rgb[0, 1, :3] = [[0, 0, 0], [128, 128, 128], [17, 17, 17]]
    return rgb


# --------------------------------------------------------------------------- calibration
def test_region_calibration_picks_the_largest_spatial_region(tmp_path):
    frames = np.arange(2 * 40 * 50, dtype=np.uint8).reshape(2, 40, 50)
    regions = [
        region(0, 0, 9, 9, delta_x_cm=0.02, delta_y_cm=0.02),  # small 2D region
        region(5, 5, 44, 34, delta_x_cm=0.03, delta_y_cm=0.025),  # largest 2D cm region
        region(0, 0, 49, 39, delta_x_cm=0.001, delta_y_cm=0.5, units=(4, 7), spatial_format=3),  # spectral
    ]
    path = write_us(tmp_path / "cine.dcm", frames, regions=regions, FrameTime=40.0)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing[:2], [0.3, 0.25])  # cm -> mm, x then y
    # The image plane: i along columns (x), j down rows (y).
    np.testing.assert_allclose(volume.index_to_world([10, 4, 0]), [3.0, 1.0, 0.0])
    np.testing.assert_array_equal(volume.array, frames)
    assert volume.metadata["ultrasound_region"] == {"x0": 5, "y0": 5, "x1": 44, "y1": 34}
    notes = " ".join(volume.metadata["notes"])
    assert "different calibration" in notes and "no patient position" in notes
    assert volume.metadata["calibrated"] is True


def test_uncalibrated_ultrasound_says_so(tmp_path):
    frame = np.full((1, 10, 12), 90, np.uint8)
    spectral_only = [region(0, 0, 11, 9, delta_x_cm=0.01, delta_y_cm=0.2, units=(4, 7), spatial_format=3)]
    path = write_us(tmp_path / "b.dcm", frame, regions=spectral_only)
    volume = read_volume(path)
    assert volume.spacing.tolist() == [1.0, 1.0, 1.0]
    assert volume.metadata["calibrated"] is False
    assert any(note.startswith("uncalibrated") for note in volume.metadata["notes"])
    assert volume.modality == "US" and not volume.is_cine
    assert volume.array.shape == (1, 10, 12) and volume.array.dtype == np.uint8


# --------------------------------------------------------------------------- timing
@pytest.mark.parametrize(
    "timing, expected",
    [
        ({"FrameTime": 40.0}, [0.0, 0.04, 0.08, 0.12]),
        ({"FrameTimeVector": [0, 30, 40, 30]}, [0.0, 0.03, 0.07, 0.10]),
        ({"CineRate": 25}, [0.0, 0.04, 0.08, 0.12]),
        ({"FrameIncrementPointer": 0x00181065, "FrameTimeVector": [0, 10, 10, 20], "FrameTime": 99.0},
         [0.0, 0.01, 0.02, 0.04]),
    ],
)
def test_cine_frame_times(tmp_path, timing, expected):
    frames = np.stack([np.full((4, 5), 10 * k, np.uint8) for k in range(4)])
    volume = read_volume(write_us(tmp_path / "c.dcm", frames, **timing))
    assert volume.is_cine and volume.n_frames == 4
    np.testing.assert_allclose(volume.frame_times, expected)
    np.testing.assert_array_equal(volume.array[:, 0, 0], [0, 10, 20, 30])  # time order kept
    assert any("axis 0 is time" in note for note in volume.metadata["notes"])


def test_cine_without_timing_is_flagged(tmp_path):
    frames = np.zeros((3, 4, 5), np.uint8)
    volume = read_volume(write_us(tmp_path / "d.dcm", frames))
    np.testing.assert_array_equal(volume.frame_times, [0, 1, 2])
    assert any("frame numbers, not seconds" in note for note in volume.metadata["notes"])


# --------------------------------------------------------------------------- colour
def test_rgb_becomes_bt601_grey(tmp_path, colour_image):
    volume = read_volume(write_us(tmp_path / "rgb.dcm", colour_image, photometric="RGB"))
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, luma(colour_image))
    assert volume.array[0, 0, :4].tolist() == [76, 150, 29, 255]  # red, green, blue, white


def test_ybr_full_grey_is_its_luma_without_a_second_conversion(tmp_path, colour_image):
    ybr = convert_color_space(colour_image[0], "RGB", "YBR_FULL")[np.newaxis]
    volume = read_volume(write_us(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    np.testing.assert_array_equal(volume.array, ybr[..., 0])  # Y itself, untouched
    assert np.max(np.abs(volume.array.astype(int) - luma(colour_image))) <= 1


def test_ybr_full_422_native(tmp_path, colour_image):
    ybr = convert_color_space(colour_image[0], "RGB", "YBR_FULL")
    y = ybr[..., 0]
    chroma = ybr[..., 1:].reshape(6, 4, 2, 2).mean(axis=2).round().astype(np.uint8)  # pairs
    stored = np.concatenate([y.reshape(6, 4, 2), chroma], axis=2)  # Y0 Y1 Cb Cr per pair
    path = write_us(tmp_path / "422.dcm", colour_image, photometric="YBR_FULL_422",
                    pixel_bytes=stored.tobytes())
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array[0], y)


def test_palette_colour(tmp_path):
    indices = np.arange(4 * 64, dtype=np.uint8).reshape(1, 4, 64)
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, size=(256, 3))
    lut = {}
    for channel, name in enumerate(("Red", "Green", "Blue")):
        lut[f"{name}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        lut[f"{name}PaletteColorLookupTableData"] = (palette[:, channel] * 257).astype("<u2").tobytes()
    volume = read_volume(write_us(tmp_path / "pal.dcm", indices, photometric="PALETTE COLOR", **lut))
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, luma(palette[indices]))


def test_monochrome1_is_inverted_for_display(tmp_path):
    stored = np.array([[[0, 10, 200, 255]]], np.uint8)
    volume = read_volume(write_us(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(volume.array, 255 - stored)
    assert any("MONOCHROME1 inverted" in note for note in volume.metadata["notes"])


# --------------------------------------------------------------------------- folders
def test_folder_with_one_cine_reads_it(tmp_path):
    frames = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_us(tmp_path / "loop", frames, FrameTime=20.0)
    volume = read_volume(tmp_path)
    assert volume.is_cine and volume.metadata["series"][0]["n_frames"] == 3
    np.testing.assert_array_equal(volume.array, frames)


def test_folder_with_several_ultrasound_images_asks_for_a_file(tmp_path):
    first = write_us(tmp_path / "one.dcm", np.zeros((1, 4, 5), np.uint8))
    second = pydicom.dcmread(first)
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    second.save_as(tmp_path / "two.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="open one file directly"):
        read_volume(tmp_path)


# --------------------------------------------------------------------------- real files
def test_real_echo_cine():
    """pydicom-data's 120-frame echo cine: JPEG baseline YBR_FULL_422, 0.051 cm/pixel."""
    path = pydicom_file("color3d_jpeg_baseline.dcm")
    volume = read_volume(path)
    assert volume.modality == "US" and volume.is_cine
    assert volume.array.shape == (120, 480, 640) and volume.array.dtype == np.uint8
    assert volume.spacing[:2] == pytest.approx([0.5105, 0.5105], abs=1e-4)
    assert volume.frame_times[1] == pytest.approx(0.033333)
    assert volume.frame_times[-1] == pytest.approx(119 * 0.033333)
    low, high = volume.value_range()
    assert low == 0 and 180 <= high <= 255
    # Grey = luma of pydicom's own RGB conversion (rounding and gamut clipping aside):
    # a second conversion or a wrong channel would miss by tens of levels.
    for index in (0, 60):
        rgb = pydicom.pixels.pixel_array(path, index=index)
        difference = np.abs(volume.array[index].astype(int) - luma(rgb))
        assert np.mean(difference) < 0.02 and np.percentile(difference, 99.9) <= 1


def test_real_small_echo_cine_bundled_with_pydicom():
    volume = read_volume(pydicom_file("examples_ybr_color.dcm"))
    assert volume.array.shape == (30, 240, 320) and volume.is_cine
    assert volume.spacing[:2] == pytest.approx([0.5105, 0.5105], abs=1e-4)


def test_real_rgb_and_ybr_copies_give_the_same_grey():
    rgb = read_volume(pydicom_file("US1_UNCR.dcm"))
    reversible = read_volume(pydicom_file("US1_J2KR.dcm"))  # YBR_RCT in JPEG 2000
    np.testing.assert_array_equal(rgb.array, reversible.array)
    assert rgb.metadata["calibrated"] is False
    assert rgb.array.max() > 200

    reference = read_volume(pydicom_file("SC_rgb.dcm")).array.astype(int)
    assert sorted({76, 150, 29} - set(np.unique(reference))) == []  # pure primaries present
    for name in ("SC_ybr_full_uncompressed.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "SC_rgb_expb.dcm"):
        grey = read_volume(pydicom_file(name)).array.astype(int)
        assert np.max(np.abs(grey - reference)) <= 1, name


@pytest.mark.parametrize(
    "name, spacing_mm",
    [
        ("OBXXXX1A.dcm", 0.2623),  # PALETTE COLOR, 8-bit indices, 16-bit LUT
        ("examples_palette.dcm", 0.2623),
        ("gdcm-US-ALOKA-16.dcm", 0.3827),  # 16-bit palette indices, two equal regions
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0.2548),  # JPEG lossless through GDCM
    ],
)
def test_real_calibrated_single_frames(name, spacing_mm):
    volume = read_volume(pydicom_file(name))
    assert volume.modality == "US" and not volume.is_cine
    assert volume.array.dtype == np.uint8
    assert volume.spacing[:2] == pytest.approx([spacing_mm, spacing_mm], abs=1e-4)
    low, high = volume.value_range()
    assert low == 0 and high >= 200  # real content over the whole 8-bit range


def test_real_file_copied_into_a_folder(tmp_path):
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), tmp_path / "IMG0001")
    (tmp_path / "notes.txt").write_text("a stray file\n")
    volume = read_volume(tmp_path)
    assert volume.is_cine and volume.n_frames == 30
