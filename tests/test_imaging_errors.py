"""Bad input through ``read_volume``: one InputError line naming the file and the problem,
never a native library's multi-line dump, and nothing printed to the terminal."""

import gzip
import io
import plistlib
import struct
import tarfile
import zlib

import nibabel as nib
import numpy as np
import pytest

from planner.errors import InputError
from planner.imaging import read_volume
from planner.imaging.formats import write_volume
from planner.volume import Volume

NATIVE_NOISE = ("sitk::", "ITK ERROR", ".cxx", "Exception thrown", "Traceback", "(0x", "[nrrd]")


def assert_clear_error(capfd, path, *fragments, **read_options) -> str:
    """``read_volume(path)`` raises one clean InputError line holding every fragment."""
    with pytest.raises(InputError) as caught:
        read_volume(path, **read_options)
    message = str(caught.value)
    assert "\n" not in message, message
    assert len(message) < 400, message
    assert path.name in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    for noise in NATIVE_NOISE:
        assert noise not in message, (noise, message)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", printed  # native libraries kept quiet
    return message


def png_bytes() -> bytes:
    """A valid 1x1 grey PNG, built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")


@pytest.fixture
def good_nifti_bytes(tmp_path) -> bytes:
    path = tmp_path / "source.nii"
    nib.save(nib.Nifti1Image(np.arange(20 * 30 * 40, dtype=np.int16).reshape(20, 30, 40), np.eye(4)), path)
    return path.read_bytes()


@pytest.fixture
def small_memory(monkeypatch):
    monkeypatch.setenv("CRYOPLAN_MAX_MEMORY_BYTES", "1000000")  # a 1 MB machine


# ---------------------------------------------------------------------------- not images
def test_nonexistent_path(tmp_path, capfd):
    assert_clear_error(capfd, tmp_path / "nowhere.nii.gz", "no such file")


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.nii", b"this is a text file, not an image\n" * 20),
        ("picture.nii", png_bytes()),
        ("noise.nii", np.random.default_rng(1).bytes(4096)),
        ("empty.nii", b""),
    ],
)
def test_non_image_with_nifti_suffix(tmp_path, capfd, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert_clear_error(capfd, path, "NIfTI")


@pytest.mark.parametrize("name, content", [("notes.txt", b"plain text\n"), ("picture.png", png_bytes())])
def test_non_image_without_image_suffix(tmp_path, capfd, name, content):
    pytest.importorskip("planner.imaging.dicom")  # the dispatcher asks the DICOM reader last
    path = tmp_path / name
    path.write_bytes(content)
    assert_clear_error(capfd, path, "not a recognised image file")


@pytest.mark.parametrize("name", ["noise.nrrd", "noise.mha", "noise.vti", "noise.nhdr", "noise.mhd"])
def test_random_bytes_with_other_suffixes(tmp_path, capfd, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(2).bytes(3000))
    assert_clear_error(capfd, path, "cannot read")


# ---------------------------------------------------------------------------- damaged NIfTI
def test_nifti_wrong_sizeof_hdr(tmp_path, capfd, good_nifti_bytes):
    damaged = bytearray(good_nifti_bytes)
    damaged[0:4] = struct.pack("<i", 123)
    path = tmp_path / "sizeof.nii"
    path.write_bytes(bytes(damaged))
    assert_clear_error(capfd, path, "sizeof_hdr is 123", "348")


def test_nifti_truncated_header(tmp_path, capfd, good_nifti_bytes):
    path = tmp_path / "short_header.nii"
    path.write_bytes(good_nifti_bytes[:200])
    assert_clear_error(capfd, path, "truncated NIfTI header", "200 bytes")


def test_nifti_truncated_data(tmp_path, capfd, good_nifti_bytes):
    path = tmp_path / "short_data.nii"
    path.write_bytes(good_nifti_bytes[: len(good_nifti_bytes) // 2])
    assert_clear_error(capfd, path, "pixel data is truncated", "expected 48000 bytes")


def test_truncated_nii_gz(tmp_path, capfd, good_nifti_bytes):
    compressed = gzip.compress(good_nifti_bytes)
    path = tmp_path / "short.nii.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    assert_clear_error(capfd, path, "pixel data", "compressed file ended")


def test_nii_gz_that_is_not_gzip(tmp_path, capfd, good_nifti_bytes):
    path = tmp_path / "plain.nii.gz"
    path.write_bytes(good_nifti_bytes[:100])
    assert_clear_error(capfd, path, "NIfTI header", "not gzip-compressed")


# ---------------------------------------------------------------------------- damaged NRRD / MetaImage / VTI
@pytest.fixture
def written(tmp_path):
    """Write a 20x30x40 int16 volume with the given suffix and return the path."""

    def write(suffix):
        return write_volume(Volume(np.ones((20, 30, 40), np.int16), np.eye(4)), tmp_path / f"whole{suffix}")

    return write


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".vti"])
def test_truncated_files(tmp_path, capfd, written, suffix):
    whole = written(suffix).read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    message = assert_clear_error(capfd, path, "cannot read")
    if suffix == ".mha":
        assert "truncated: expected 48000 bytes" in message


def test_nrrd_header_without_endian(tmp_path, capfd):
    path = tmp_path / "noendian.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n" + bytes(128))
    assert_clear_error(capfd, path, "header", "endian")


@pytest.mark.parametrize("name, header", [
    ("lost.mhd", "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = lost.raw\n"),
    ("lost.nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nendian: little\nencoding: raw\ndata file: lost.raw\n"),
])
def test_detached_header_with_missing_data_file(tmp_path, capfd, name, header):
    path = tmp_path / name
    path.write_text(header)
    assert_clear_error(capfd, path, "cannot read")


def test_vti_with_cell_data_only(tmp_path, capfd):
    import pyvista as pv

    grid = pv.ImageData(dimensions=(3, 3, 3))
    grid.cell_data["c"] = np.arange(grid.n_cells, dtype=float)
    grid.save(tmp_path / "cells.vti")
    assert_clear_error(capfd, tmp_path / "cells.vti", "cell data only")


# ---------------------------------------------------------------------------- damaged InVesalius projects
def inv3_archive(path, members: dict[str, bytes], *, compress=True):
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def main_plist(shape=(4, 5, 6), dtype="int16", **extra) -> bytes:
    plist = {
        "modality": "CT", "orientation": 1, "spacing": [1.0, 1.0, 2.0], "name": "x",
        "matrix": {"filename": "matrix.dat", "shape": list(shape), "dtype": dtype},
    }
    plist.update(extra)
    return plistlib.dumps(plist)


def test_inv3_that_is_not_a_tar(tmp_path, capfd):
    path = tmp_path / "fake.inv3"
    path.write_bytes(b"not a tar archive at all" * 100)
    assert_clear_error(capfd, path, "not a (gzipped) tar archive")


def test_inv3_without_main_plist(tmp_path, capfd):
    path = inv3_archive(tmp_path / "noplist.inv3", {"p/matrix.dat": bytes(240)})
    assert_clear_error(capfd, path, "no main.plist")


def test_inv3_with_short_matrix(tmp_path, capfd):
    path = inv3_archive(tmp_path / "short.inv3", {"p/main.plist": main_plist(), "p/matrix.dat": bytes(100)})
    assert_clear_error(capfd, path, "matrix.dat is truncated", "100 bytes", "expected 240")


def test_inv3_without_matrix(tmp_path, capfd):
    path = inv3_archive(tmp_path / "nomatrix.inv3", {"p/main.plist": main_plist()})
    assert_clear_error(capfd, path, "no matrix.dat")


def test_inv3_with_invalid_plist(tmp_path, capfd):
    path = inv3_archive(tmp_path / "badplist.inv3", {"p/main.plist": b"<plist><dict><key>", "p/matrix.dat": bytes(240)})
    assert_clear_error(capfd, path, "main.plist is not a valid property list")


def test_inv3_with_missing_spacing(tmp_path, capfd):
    plist = plistlib.loads(main_plist())
    del plist["spacing"]
    path = inv3_archive(tmp_path / "nospacing.inv3", {"p/main.plist": plistlib.dumps(plist), "p/matrix.dat": bytes(240)})
    assert_clear_error(capfd, path, "no 'spacing' entry")


def test_truncated_inv3_archive(tmp_path, capfd):
    noise = np.random.default_rng(4).integers(-1000, 1000, size=(40, 50, 60)).astype("<i2").tobytes()
    whole = inv3_archive(tmp_path / "whole.inv3", {"p/main.plist": main_plist((40, 50, 60)), "p/matrix.dat": noise})
    path = tmp_path / "cut.inv3"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert_clear_error(capfd, path, "damaged")


# ---------------------------------------------------------------------------- too large for memory
def test_nifti_header_claiming_a_huge_volume(tmp_path, capfd, small_memory):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((4000, 4000, 4000))
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4 + bytes(64))
    assert_clear_error(capfd, path, "4000x4000x4000", "GiB", "memory")


def test_huge_volume_refused_without_override_too(tmp_path, capfd, monkeypatch):
    """4000^3 int16 is 119 GiB: no test machine has that, with or without the override."""
    monkeypatch.delenv("CRYOPLAN_MAX_MEMORY_BYTES", raising=False)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((4000, 4000, 4000))
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\x00" * 4))
    assert_clear_error(capfd, path, "4000x4000x4000", "memory")


@pytest.mark.parametrize("name, header", [
    ("huge.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4000 4000 4000\nendian: little\nencoding: raw\n\n"),
    ("huge.mha", "ObjectType = Image\nNDims = 3\nDimSize = 4000 4000 4000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"),
])
def test_itk_header_claiming_a_huge_volume(tmp_path, capfd, small_memory, name, header):
    path = tmp_path / name
    path.write_bytes(header.encode() + bytes(64))
    assert_clear_error(capfd, path, "4000x4000x4000", "memory")


def test_vti_header_claiming_a_huge_volume(tmp_path, capfd, small_memory):
    path = tmp_path / "huge.vti"
    path.write_text(
        '<VTKFile type="ImageData" version="0.1" byte_order="LittleEndian">\n'
        '<ImageData WholeExtent="0 3999 0 3999 0 3999" Origin="0 0 0" Spacing="1 1 1">\n'
        '<Piece Extent="0 3999 0 3999 0 3999"><PointData Scalars="v">\n'
        '<DataArray type="Int16" Name="v" format="ascii">0</DataArray>\n'
        "</PointData></Piece></ImageData></VTKFile>\n"
    )
    assert_clear_error(capfd, path, "4000x4000x4000", "memory")


def test_inv3_too_large_for_memory(tmp_path, capfd, small_memory):
    shape = (10, 200, 300)  # 1.2 MB of int16 on a 1 MB machine
    path = inv3_archive(
        tmp_path / "big.inv3",
        {"p/main.plist": main_plist(shape), "p/matrix.dat": bytes(int(np.prod(shape)) * 2)},
    )
    assert_clear_error(capfd, path, "300x200x10", "memory")

