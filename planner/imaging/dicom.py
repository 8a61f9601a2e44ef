"""DICOM reading: classic series, enhanced multi-frame CT/MR, ultrasound frames and cines.

Entry points (all reached through :func:`planner.imaging.read_volume`):

- :func:`is_dicom_file` - a cheap test of whether a file is DICOM;
- :func:`list_series` - the image series in a folder, from headers only;
- :func:`read_dicom_folder` - one series of a folder as a :class:`~planner.volume.Volume`;
- :func:`read_dicom_file` - one file: enhanced multi-frame CT/MR, a classic single slice,
  an ultrasound B-mode frame or cine, or any other 2D image.

Geometry. Slices are ordered by their position projected on the slice normal
``n = row direction x column direction`` (never by file name or InstanceNumber), so the
volume's k axis always points along ``+n`` and ``(i, j, k)`` is right-handed. The affine
columns are ``row direction * column spacing``, ``column direction * row spacing``
(DICOM ``PixelSpacing`` is ``[row spacing, column spacing]``) and the slice step vector.
For a gantry-tilted series the step vector is not along ``n``; the affine keeps that shear
(exact positions) and a note says so.

Decisions on imperfect series, each reported in ``volume.metadata["notes"]`` and, where
the data had to be changed, by a :class:`DicomWarning`:

- Slice positions within ``max(0.01 mm, 5 % of the step)`` of a uniform grid are accepted
  as they are (scanner round-off).
- Otherwise (a missing slice, a truncated file left out, uneven steps) the stack is
  resampled along the slice normal by linear interpolation onto a uniform grid with the
  median step, from the first to the last slice.
- Several slices at one position: one is kept (lowest AcquisitionNumber, then
  InstanceNumber) and the others are reported; exact copies (same SOPInstanceUID) too.
- Mixed orientation, pixel spacing or image size within one series: :class:`InputError`.
- A file of the series whose pixel data is cut short is left out (with a note and a
  warning) and the gap is then handled as a missing slice; a single file passed to
  :func:`read_dicom_file` that is cut short is an :class:`InputError`.
- Files that are not DICOM (or DICOMDIR, structured reports and other non-image objects)
  in a folder are ignored; DICOM files whose header cannot be parsed are skipped with a note.

Pixel values. CT is returned in HU: ``RescaleSlope``/``RescaleIntercept`` are applied per
slice; the result is ``int16`` when every slope and intercept is an integer and the values
fit, otherwise ``float32``. Colour images (RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR)
become ``uint8`` grey luminance (ITU-R BT.601 weights). YBR data is asked for raw and its Y
channel is used directly, so no colour conversion is done twice.

Pixel data is decoded by pydicom (native, RLE, JPEG baseline/extended and JPEG 2000 through
Pillow); JPEG lossless and JPEG-LS, which pydicom cannot decode without extra plugins, go
through SimpleITK's GDCM reader. Anything else (e.g. MPEG video) is an :class:`InputError`
naming the transfer syntax.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import InputError
from planner.imaging.memory import check_fits_in_memory
from planner.volume import Volume

# --------------------------------------------------------------------------- constants
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
NATIVE_TRANSFER_SYNTAXES = (
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
# Compressed syntaxes that GDCM (inside SimpleITK) decodes when pydicom has no plugin.
GDCM_DECODABLE = (
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE
)
MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR
ULTRASOUND_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.6.1",  # US Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.6",  # US Image (retired)
    "1.2.840.10008.5.1.4.1.1.3",  # US Multi-frame (retired)
)
PHYSICAL_UNITS_CM = 3  # PhysicalUnitsX/YDirection code for centimetres
REGION_SPATIAL_2D = 1  # RegionSpatialFormat code for a 2D (tissue or colour flow) region

# Slice-grid tolerances (mm): positions this close count as one position, and a stack
# whose positions stay this close to a uniform grid is taken as uniform.
DUPLICATE_TOLERANCE_MM = 0.01
JITTER_TOLERANCE_MM = 0.01
JITTER_TOLERANCE_FRACTION = 0.05
ORIENTATION_TOLERANCE = 1e-3  # on direction cosines
SPACING_TOLERANCE_FRACTION = 1e-3
# A stack whose slices drift off their common axis by more than this (fraction of the
# in-plane pixel size) is not one volume.
LATERAL_TOLERANCE_FRACTION = 0.1

_INT16 = np.iinfo(np.int16)
_LUMA_WEIGHTS_16BIT = (19595, 38470, 7471)  # BT.601 0.299/0.587/0.114 * 65536, sum 65536


class DicomWarning(UserWarning):
    """The DICOM data had to be changed to make a volume (resampled, slices dropped)."""


# --------------------------------------------------------------------------- headers
@dataclass
class SeriesInfo:
    """One image series found in a folder (from headers only).

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID (``""`` when the files have none).
    modality : str
        DICOM Modality, e.g. ``"CT"``, ``"MR"``, ``"US"``.
    description : str
        SeriesDescription.
    patient_name, patient_id, study_date, study_description : str
        From the first file of the series.
    n_files : int
        Number of files in the series.
    n_frames : int
        Number of image slices/frames over all its files.
    orientation : str
        ``"axial"``, ``"coronal"``, ``"sagittal"``, ``"oblique (near axial, 12 deg)"``,
        or ``"none"`` when the images have no patient orientation (ultrasound, photos).
    rows, columns : int
        Image size of the first file.
    """

    series_uid: str
    modality: str
    description: str
    patient_name: str
    patient_id: str
    study_date: str
    n_files: int
    n_frames: int
    orientation: str
    rows: int
    columns: int
    study_description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of the fields."""
        return asdict(self)


@dataclass(eq=False)
class _FileHeader:
    """What the header of one DICOM file says, read without its pixel data."""

    path: Path
    dataset: Any  # pydicom Dataset without pixel data
    transfer_syntax: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    rows: int
    columns: int
    n_frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None
    slope: float
    intercept: float
    instance_number: int
    acquisition_number: int
    pixel_offset: int | None  # file offset of native pixel values; None if compressed
    pixel_problem: str  # "" or why the pixel data cannot be used (missing, truncated)

    @property
    def is_image(self) -> bool:
        return self.rows > 0 and self.columns > 0

    @property
    def has_slice_geometry(self) -> bool:
        return self.position is not None and self.orientation is not None

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8


class _NotDicom(Exception):
    """The file is not DICOM at all (ignored in folders)."""


def _float_list(value) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return values if np.all(np.isfinite(values)) else None


def _number(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _text(dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def _quiet_dcmread(source, *, stop_before_pixels: bool = False, on_truncation: bool = False):
    """``pydicom.dcmread(..., force=True)`` without its warnings reaching the user.

    With ``on_truncation``, pydicom's "end of file reached before delimiter" warning (an
    encapsulated pixel data stream cut short) becomes an :class:`InputError`.
    """
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
    if on_truncation and any("End of file reached" in str(w.message) for w in caught):
        raise InputError(f"{source}: pixel data truncated (the file ends inside the compressed data)")
    return dataset


def _looks_like_dataset_start(head: bytes) -> bool:
    """True when a file without preamble starts like a DICOM data set (group 2 or 8)."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def is_dicom_file(path) -> bool:
    """Whether ``path`` is a DICOM file.

    True for files with the ``DICM`` marker after the 128-byte preamble, and for files
    without preamble that start with a group 0002 or 0008 element and parse as a data
    set with a SOP class, SOP instance, modality or image size. Never raises.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
            if head[128:132] == b"DICM":
                return True
            if not _looks_like_dataset_start(head):
                return False
            stream.seek(0)
            dataset = _quiet_dcmread(stream, stop_before_pixels=True)
            return any(
                keyword in dataset
                for keyword in ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows")
            )
    except Exception:
        return False


def _pixel_element(stream, header_start: int, *, implicit: bool, little: bool):
    """Parse the element header at ``header_start``: ``(tag, value_offset, value_length)``.

    ``value_length`` is ``None`` for an encapsulated (undefined-length) value; ``tag`` is
    ``None`` at the end of the file.
    """
    stream.seek(header_start)
    raw = stream.read(12)
    if len(raw) < 8:
        return None, None, None
    endian = "<" if little else ">"
    group, element = struct.unpack(endian + "HH", raw[:4])
    if implicit:
        (length,) = struct.unpack(endian + "I", raw[4:8])
        value_offset = header_start + 8
    elif raw[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT"):
        if len(raw) < 12:
            return (group, element), None, 0
        (length,) = struct.unpack(endian + "I", raw[8:12])
        value_offset = header_start + 12
    else:
        (length,) = struct.unpack(endian + "H", raw[6:8])
        value_offset = header_start + 8
    return (group, element), value_offset, (None if length == 0xFFFFFFFF else length)


def _read_header(path: Path) -> _FileHeader:
    """Read one file's header (no pixel data) and locate its pixel data.

    Raises ``_NotDicom`` for files that are not DICOM and :class:`InputError` for DICOM
    files whose header cannot be parsed.
    """
    try:
        stream = open(path, "rb")
    except OSError as error:
        raise InputError(f"{path}: cannot open ({error.strerror})") from error
    with stream:
        head = stream.read(132)
        has_preamble = head[128:132] == b"DICM"
        if not has_preamble and not _looks_like_dataset_start(head):
            raise _NotDicom(str(path))
        stream.seek(0)
        try:
            dataset = _quiet_dcmread(stream, stop_before_pixels=True)
        except Exception as error:
            if not has_preamble:
                raise _NotDicom(str(path)) from error
            raise InputError(f"{path}: corrupt or truncated DICOM header ({error})") from error
        if not has_preamble and not any(
            k in dataset for k in ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows")
        ):
            raise _NotDicom(str(path))
        if len(dataset) == 0:
            # pydicom stops quietly at a cut; a DICM file with no data set is broken.
            raise InputError(f"{path}: corrupt or truncated DICOM header (no data elements)")
        pixel_start = stream.tell()
        file_size = os.fstat(stream.fileno()).st_size
        meta = getattr(dataset, "file_meta", None)
        transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        try:
            implicit, little = dataset.original_encoding
        except Exception:  # pragma: no cover - pydicom always sets it after a read
            implicit, little = True, True
        if implicit is None:
            implicit, little = True, True
        if not transfer_syntax:
            transfer_syntax = (
                IMPLICIT_VR_LITTLE_ENDIAN
                if implicit
                else EXPLICIT_VR_LITTLE_ENDIAN if little else EXPLICIT_VR_BIG_ENDIAN
            )
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # File offsets mean nothing inside a deflated stream: ask pydicom instead.
            stream.seek(0)
            try:
                has_pixels = "PixelData" in _quiet_dcmread(stream)
            except Exception as error:
                raise InputError(f"{path}: corrupt deflated DICOM ({error})") from error
            tag, value_offset, value_length = ((0x7FE0, 0x0010) if has_pixels else None), 0, 0
        else:
            tag, value_offset, value_length = _pixel_element(
                stream, pixel_start, implicit=bool(implicit), little=bool(little)
            )

    rows = int(dataset.get("Rows", 0) or 0)
    columns = int(dataset.get("Columns", 0) or 0)
    sop_class_uid = _text(dataset, "SOPClassUID") or (
        str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    )
    if rows == 0 and tag is None and _is_image_storage(sop_class_uid):
        raise InputError(
            f"{path}: truncated DICOM file ({_describe_sop_class(sop_class_uid)} whose header "
            "ends before the image)"
        )
    n_frames = max(int(_number(dataset.get("NumberOfFrames", 1), 1)), 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
    bits_stored = int(dataset.get("BitsStored", bits_allocated) or bits_allocated)
    native = transfer_syntax in NATIVE_TRANSFER_SYNTAXES
    photometric = _text(dataset, "PhotometricInterpretation").upper() or "MONOCHROME2"
    # Native YBR_FULL_422 stores two samples per pixel (Y Y Cb Cr for each pixel pair).
    stored_samples = 2 if (samples == 3 and photometric == "YBR_FULL_422") else samples

    pixel_problem = ""
    pixel_offset = None
    if tag is None or tag[0] != 0x7FE0:
        pixel_problem = "no pixel data"
    elif tag[1] != 0x0010:
        pixel_problem = "floating-point pixel data (not supported)"
    elif native and bits_allocated in (8, 16, 32):
        expected = rows * columns * stored_samples * n_frames * bits_allocated // 8
        available = file_size - value_offset
        if value_length is None or min(value_length, available) < expected:
            held = min(value_length if value_length is not None else available, available)
            pixel_problem = f"pixel data truncated ({held} of {expected} bytes)"
        else:
            pixel_offset = value_offset
    elif value_length is not None and value_offset + value_length > file_size:
        pixel_problem = (
            f"pixel data truncated ({file_size - value_offset} of {value_length} bytes)"
        )

    return _FileHeader(
        path=path,
        dataset=dataset,
        transfer_syntax=transfer_syntax,
        series_uid=_text(dataset, "SeriesInstanceUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        sop_class_uid=sop_class_uid,
        modality=_text(dataset, "Modality").upper() or "OT",
        rows=rows,
        columns=columns,
        n_frames=n_frames,
        samples_per_pixel=samples,
        photometric=photometric,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=int(dataset.get("PixelRepresentation", 0) or 0) == 1,
        position=_float_list(dataset.get("ImagePositionPatient")),
        orientation=_float_list(dataset.get("ImageOrientationPatient")),
        pixel_spacing=_float_list(dataset.get("PixelSpacing")),
        slope=_number(dataset.get("RescaleSlope", 1.0), 1.0) or 1.0,
        intercept=_number(dataset.get("RescaleIntercept", 0.0), 0.0),
        instance_number=int(_number(dataset.get("InstanceNumber", 0), 0)),
        acquisition_number=int(_number(dataset.get("AcquisitionNumber", 0), 0)),
        pixel_offset=pixel_offset,
        pixel_problem=pixel_problem,
    )


def _is_image_storage(uid: str) -> bool:
    """Whether the SOP class stores images (by pydicom's UID name: "... Image Storage")."""
    return "Image Storage" in _describe_sop_class(uid)


def _describe_sop_class(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else (uid or "unknown SOP class")


# --------------------------------------------------------------------------- folder scan
@dataclass
class _FolderScan:
    folder: Path
    series: dict[str, list[_FileHeader]]
    n_files: int = 0
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    non_image: list[_FileHeader] = field(default_factory=list)

    def notes(self) -> list[str]:
        notes = []
        if self.unreadable:
            names = ", ".join(p.name for p, _ in self.unreadable[:5])
            more = "" if len(self.unreadable) <= 5 else f" and {len(self.unreadable) - 5} more"
            notes.append(
                f"{len(self.unreadable)} DICOM file(s) with an unreadable header were "
                f"skipped: {names}{more}"
            )
        return notes


def _scan_folder(folder: Path) -> _FolderScan:
    """Read the headers of every file under ``folder`` (recursively), grouped by series."""
    scan = _FolderScan(folder=folder, series={})
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            scan.n_files += 1
            try:
                header = _read_header(path)
            except _NotDicom:
                scan.not_dicom.append(path)
                continue
            except InputError as error:
                scan.unreadable.append((path, str(error)))
                continue
            if header.sop_class_uid == MEDIA_DIRECTORY_STORAGE or not header.is_image:
                scan.non_image.append(header)
                continue
            scan.series.setdefault(header.series_uid, []).append(header)
    return scan


def _orientation_label(orientation: np.ndarray | None) -> str:
    if orientation is None or orientation.shape != (6,):
        return "none"
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        return "none"
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    name = ("sagittal", "coronal", "axial")[axis]
    angle = float(np.degrees(np.arccos(min(normal[axis], 1.0))))
    return name if angle < 1.0 else f"oblique (near {name}, {angle:.0f} deg)"


def _enhanced_orientation(dataset) -> np.ndarray | None:
    """ImageOrientationPatient of an enhanced multi-frame file (shared or first frame)."""
    for group_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = dataset.get(group_keyword)
        if groups:
            plane = groups[0].get("PlaneOrientationSequence")
            if plane:
                return _float_list(plane[0].get("ImageOrientationPatient"))
    return None


def _series_info(headers: list[_FileHeader]) -> SeriesInfo:
    first = headers[0]
    orientation = first.orientation
    if orientation is None:
        orientation = _enhanced_orientation(first.dataset)
    dataset = first.dataset
    return SeriesInfo(
        series_uid=first.series_uid,
        modality=first.modality,
        description=_text(dataset, "SeriesDescription"),
        patient_name=_text(dataset, "PatientName"),
        patient_id=_text(dataset, "PatientID"),
        study_date=_text(dataset, "StudyDate"),
        n_files=len(headers),
        n_frames=sum(h.n_frames for h in headers),
        orientation=_orientation_label(orientation),
        rows=first.rows,
        columns=first.columns,
        study_description=_text(dataset, "StudyDescription"),
    )


def _sorted_series(scan: _FolderScan) -> list[SeriesInfo]:
    infos = [_series_info(headers) for headers in scan.series.values()]
    infos.sort(key=lambda info: (-info.n_frames, info.series_uid))
    return infos


def _check_folder(folder) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    return folder


def _no_series_error(scan: _FolderScan) -> InputError:
    folder = scan.folder
    if scan.n_files == 0:
        return InputError(f"{folder}: empty folder (no files to read)")
    parts = []
    if scan.not_dicom:
        parts.append(f"{len(scan.not_dicom)} not DICOM")
    if scan.non_image:
        kinds = sorted(
            {
                "DICOMDIR"
                if h.sop_class_uid == MEDIA_DIRECTORY_STORAGE
                else _describe_sop_class(h.sop_class_uid)
                for h in scan.non_image
            }
        )
        parts.append(f"{len(scan.non_image)} DICOM without images ({', '.join(kinds)})")
    if scan.unreadable:
        parts.append(f"{len(scan.unreadable)} unreadable DICOM")
    return InputError(
        f"{folder}: no DICOM image series found among {scan.n_files} file(s): "
        + "; ".join(parts)
    )


def list_series(folder) -> list[SeriesInfo]:
    """The DICOM image series under ``folder`` (recursively), most frames first.

    Reads headers only. Files that are not DICOM, DICOMDIR files and DICOM objects
    without pixel data (structured reports, RT plans, ...) are ignored.

    Parameters
    ----------
    folder : str or Path
        Folder to scan; file names and extensions do not matter.

    Returns
    -------
    list of SeriesInfo
        Empty when the folder holds no image series.
    """
    folder = _check_folder(folder)
    return _sorted_series(_scan_folder(folder))


# --------------------------------------------------------------------------- pixel access
def _stored_dtype(header: _FileHeader) -> np.dtype:
    kind = "i" if header.signed else "u"
    return np.dtype(f"{kind}{max(header.bits_allocated, 8) // 8}")


def _fix_unused_bits(values: np.ndarray, header: _FileHeader) -> np.ndarray:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored, in place."""
    bits = values.dtype.itemsize * 8
    if not np.issubdtype(values.dtype, np.integer) or not 0 < header.bits_stored < bits:
        return values
    if header.signed:
        shift = bits - header.bits_stored
        np.left_shift(values, shift, out=values)
        np.right_shift(values, shift, out=values)
    else:
        np.bitwise_and(values, (1 << header.bits_stored) - 1, out=values)
    return values


def _pydicom_can_decode(transfer_syntax: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax).is_available
    except Exception:
        return False


def _check_decodable(header: _FileHeader) -> None:
    syntax = header.transfer_syntax
    if syntax in NATIVE_TRANSFER_SYNTAXES or _pydicom_can_decode(syntax):
        return
    if syntax in GDCM_DECODABLE and _gdcm_available():
        return
    from pydicom.uid import UID

    name = UID(syntax).name if syntax else "unknown"
    raise InputError(
        f"{header.path}: pixel data is compressed as '{name}' ({syntax}), which cannot be "
        "decoded here (pydicom and GDCM have no decoder for it)"
    )


def _gdcm_available() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:  # pragma: no cover - SimpleITK is a dependency
        return False
    return True


def _strip_rescale(dataset) -> None:
    """Remove modality rescale everywhere so GDCM returns stored values."""
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if keyword in dataset:
            delattr(dataset, keyword)
    for group_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in dataset.get(group_keyword) or []:
            if "PixelValueTransformationSequence" in group:
                del group.PixelValueTransformationSequence


def _decode_with_gdcm(path: Path) -> tuple[np.ndarray, str]:
    """Decode every frame through SimpleITK's GDCM reader.

    Returns ``(frames, photometric)``: ``(n, rows, cols)`` stored values for grey data,
    ``(n, rows, cols, 3)`` RGB for colour (GDCM converts YBR and palettes to RGB).
    """
    import SimpleITK as sitk

    dataset = _quiet_dcmread(path)
    _strip_rescale(dataset)
    with tempfile.TemporaryDirectory(prefix="cryoplan-dicom-") as scratch:
        copy = Path(scratch) / "frame.dcm"
        dataset.save_as(copy, enforce_file_format=False)
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(copy))
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(
                f"{path}: pixel data could not be decoded ({str(error).strip().splitlines()[-1]})"
            ) from error
        frames = sitk.GetArrayFromImage(image)
    colour = image.GetNumberOfComponentsPerPixel() > 1
    if frames.ndim == (3 if colour else 2):
        frames = frames[np.newaxis]
    return frames, ("RGB" if colour else dataset.get("PhotometricInterpretation", "MONOCHROME2"))


class _PixelSource:
    """Reads the frames of one file as stored values (before rescale), one at a time.

    Native grey data is read straight from the file at its offset into the caller's
    buffer; everything else is decoded through pydicom (or GDCM as a fallback).
    """

    def __init__(self, header: _FileHeader):
        self.header = header
        self._dataset = None
        self._gdcm_frames = None
        self._gdcm_photometric = ""

    @property
    def fast(self) -> bool:
        h = self.header
        return (
            h.pixel_offset is not None
            and h.samples_per_pixel == 1
            and h.bits_allocated in (8, 16, 32)
        )

    @property
    def raw_dtype(self) -> np.dtype:
        dtype = _stored_dtype(self.header)
        if self.header.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
            dtype = dtype.newbyteorder(">")
        return dtype

    def read_grey_into(self, frame_index: int, buffer: np.ndarray) -> None:
        """Fill ``buffer`` (rows, cols), of :attr:`raw_dtype` when :attr:`fast`, with frame
        ``frame_index``'s stored grey values."""
        h = self.header
        if self.fast and buffer.dtype == self.raw_dtype and buffer.flags.c_contiguous:
            with open(h.path, "rb", buffering=0) as stream:
                stream.seek(h.pixel_offset + frame_index * h.frame_bytes)
                view = buffer.reshape(-1).view(np.uint8)
                if stream.readinto(view) != view.size:
                    raise InputError(f"{h.path}: pixel data truncated (file changed while reading)")
            _fix_unused_bits(buffer, h)
            return
        frame, _ = self.decode(frame_index)
        buffer[...] = frame

    def decode(self, frame_index: int) -> tuple[np.ndarray, str]:
        """``(array, photometric)`` of one frame as decoded: grey ``(rows, cols)`` stored
        values, or ``(rows, cols, 3)`` in the returned photometric interpretation."""
        h = self.header
        if self.fast:
            buffer = np.empty((h.rows, h.columns), self.raw_dtype)
            self.read_grey_into(frame_index, buffer)
            return buffer, h.photometric
        if self._gdcm_frames is None and not _pydicom_can_decode(h.transfer_syntax):
            _check_decodable(h)
            self._gdcm_frames, self._gdcm_photometric = _decode_with_gdcm(h.path)
        if self._gdcm_frames is not None:
            return self._gdcm_frames[frame_index], self._gdcm_photometric
        from pydicom.pixels import get_decoder

        if self._dataset is None:
            try:
                self._dataset = _quiet_dcmread(h.path, on_truncation=True)
            except InputError:
                raise
            except Exception as error:
                raise InputError(f"{h.path}: cannot read pixel data ({error})") from error
        try:
            frame, meta = get_decoder(h.transfer_syntax).as_array(
                self._dataset, index=frame_index, raw=True
            )
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if h.transfer_syntax in GDCM_DECODABLE and _gdcm_available():
                # A plugin that exists but fails on this stream: GDCM may still read it.
                try:
                    self._gdcm_frames, self._gdcm_photometric = _decode_with_gdcm(h.path)
                except InputError:
                    pass
                else:
                    return self.decode(frame_index)
            raise InputError(f"{h.path}: pixel data could not be decoded ({message})") from error
        photometric = str(meta.get("photometric_interpretation", h.photometric)).upper()
        if frame.ndim == 2:
            frame = _fix_unused_bits(np.array(frame), h)
        return frame, photometric


# --------------------------------------------------------------------------- colour
def _luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame ``(rows, cols, 3)`` in the frame's own integer range."""
    weights = _LUMA_WEIGHTS_16BIT
    acc = rgb[..., 0].astype(np.uint64 if rgb.dtype.itemsize > 2 else np.uint32) * weights[0]
    acc += rgb[..., 1].astype(acc.dtype) * weights[1]
    acc += rgb[..., 2].astype(acc.dtype) * weights[2]
    acc += 1 << 15
    acc >>= 16
    return acc


def _to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Map integer values of ``bits`` significant bits onto 0..255 (rounded, so that
    full scale maps to full scale: 65535 -> 255 and 257 * v -> v)."""
    if bits > 8:
        top = (1 << bits) - 1
        values = (values.astype(np.uint64) * 255 + top // 2) // top
    return np.clip(values, 0, 255).astype(np.uint8)


def _grey_frame(frame: np.ndarray, photometric: str, header: _FileHeader, dataset) -> np.ndarray:
    """One decoded frame as display grey: uint8 for colour, stored values for grey."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(frame, dataset)
        descriptor = dataset.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 8]
        return _to_uint8(_luma_from_rgb(rgb), int(descriptor[2]))
    if frame.ndim == 3:
        if photometric.startswith("YBR_FULL"):
            # Y of YBR_FULL is BT.601 luma already: use it, do not convert to RGB and back.
            luma = frame[..., 0]
        elif photometric in ("RGB", "YBR_RCT", "YBR_ICT"):  # J2K decoders return RGB
            luma = _luma_from_rgb(frame)
        else:
            raise InputError(
                f"{header.path}: photometric interpretation {photometric} is not supported"
            )
        bits = header.bits_stored if header.bits_stored else frame.dtype.itemsize * 8
        return _to_uint8(np.asarray(luma), min(bits, frame.dtype.itemsize * 8))
    return frame


# --------------------------------------------------------------------------- stacking
@dataclass
class _Slice:
    """One 2D image (a file, or a frame of a multi-frame file) with its plane geometry."""

    source: _PixelSource
    frame_index: int
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    slope: float
    intercept: float
    thickness: float | None
    tie_key: tuple  # orders slices at the same position


@dataclass
class _StackPlan:
    slices: list[_Slice]  # kept slices, sorted along the normal
    affine: np.ndarray
    # For each output slice k: (index a, index b, weight of b) into ``slices``.
    targets: list[tuple[int, int, float]]
    notes: list[str]
    warnings: list[str]


def _plan_stack(slices: list[_Slice], source: str, label: str) -> _StackPlan:
    """Check that ``slices`` form one volume; order them and plan a uniform grid."""
    notes: list[str] = []
    warns: list[str] = []
    orientations = np.array([s.orientation for s in slices])
    spacings = np.array([s.pixel_spacing for s in slices])
    if np.max(np.abs(orientations - orientations[0])) > ORIENTATION_TOLERANCE:
        kinds = sorted({_orientation_label(o) for o in orientations})
        raise InputError(
            f"{source}: {label} mixes slice orientations ({', '.join(kinds)}): not one volume"
        )
    if np.max(np.abs(spacings - spacings[0])) > SPACING_TOLERANCE_FRACTION * spacings[0].min():
        found = sorted({f"{a:.4g}x{b:.4g}" for a, b in spacings})
        raise InputError(
            f"{source}: {label} mixes pixel spacings ({', '.join(found)} mm): not one volume"
        )
    row = orientations[0, :3] / np.linalg.norm(orientations[0, :3])
    column = orientations[0, 3:] / np.linalg.norm(orientations[0, 3:])
    if abs(float(row @ column)) > ORIENTATION_TOLERANCE:
        raise InputError(f"{source}: {label} has non-perpendicular ImageOrientationPatient")
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    row_spacing, column_spacing = spacings[0]

    positions = np.array([s.position for s in slices])
    depth = positions @ normal
    tie = [s.tie_key for s in slices]
    order = sorted(range(len(slices)), key=lambda n: (depth[n], tie[n]))
    # Group slices at (nearly) the same position; keep the first of each group.
    kept = [order[0]]
    duplicates = 0
    identical = 0
    for n in order[1:]:
        if depth[n] - depth[kept[-1]] < DUPLICATE_TOLERANCE_MM:
            duplicates += 1
            uid = slices[n].tie_key[-1]
            identical += bool(uid and uid == slices[kept[-1]].tie_key[-1])
        else:
            kept.append(n)
    if duplicates:
        message = (
            f"{duplicates} slice(s) share a position with another slice and were ignored "
            f"(kept the lowest acquisition/instance number at each position"
            + (f"; {identical} are copies of the same instance" if identical else "")
            + ")"
        )
        notes.append(message)
        warns.append(message)
    ordered = [slices[n] for n in kept]
    depth = depth[kept]
    positions = positions[kept]
    n_slices = len(ordered)

    if n_slices == 1:
        thickness = ordered[0].thickness
        step = thickness if thickness and thickness > 0 else 1.0
        if not (thickness and thickness > 0):
            notes.append("single slice without SliceThickness: slice spacing set to 1 mm")
        step_vector = normal * step
        targets = [(0, 0, 0.0)]
    else:
        extent = depth[-1] - depth[0]
        axis = (positions[-1] - positions[0]) / extent  # unit step along the normal
        lateral = positions - positions[0] - np.outer(depth - depth[0], axis)
        drift = float(np.max(np.linalg.norm(lateral, axis=1)))
        if drift > LATERAL_TOLERANCE_FRACTION * min(row_spacing, column_spacing):
            raise InputError(
                f"{source}: {label} slice positions do not lie on one line along the slice "
                f"normal (off by up to {drift:.3g} mm): not one volume"
            )
        tilt = float(np.degrees(np.arccos(min(1.0, 1.0 / np.linalg.norm(axis)))))
        if tilt > 0.01:
            notes.append(
                f"slices are sheared (gantry tilt {tilt:.2f} deg): the affine keeps the shear"
            )
        steps = np.diff(depth)
        uniform = depth[0] + np.arange(n_slices) * extent / (n_slices - 1)
        deviation = float(np.max(np.abs(depth - uniform)))
        median_step = float(np.median(steps))
        tolerance = max(JITTER_TOLERANCE_MM, JITTER_TOLERANCE_FRACTION * median_step)
        if deviation <= tolerance:
            step = extent / (n_slices - 1)
            targets = [(k, k, 0.0) for k in range(n_slices)]
            if deviation > 1e-3 * step:
                notes.append(
                    f"slice positions deviate up to {deviation:.3g} mm from a uniform "
                    f"{step:.4g} mm grid (accepted as uniform)"
                )
        else:
            n_out = int(round(extent / median_step)) + 1
            step = extent / (n_out - 1)
            grid = depth[0] + np.arange(n_out) * step
            upper = np.clip(np.searchsorted(depth, grid, side="left"), 1, n_slices - 1)
            lower = upper - 1
            weight = (grid - depth[lower]) / (depth[upper] - depth[lower])
            targets = []
            for a, b, w in zip(lower, upper, weight):
                if w <= 1e-6:
                    targets.append((int(a), int(a), 0.0))
                elif w >= 1 - 1e-6:
                    targets.append((int(b), int(b), 0.0))
                else:
                    targets.append((int(a), int(b), float(w)))
            gaps = int(np.sum(np.maximum(np.rint(steps / median_step) - 1, 0)))
            message = (
                f"uneven slice spacing (steps {steps.min():.4g} to {steps.max():.4g} mm, "
                f"median {median_step:.4g} mm"
                + (f", about {gaps} missing slice(s)" if gaps else "")
                + f"): resampled by linear interpolation to {n_out} slices every {step:.4g} mm"
            )
            notes.append(message)
            warns.append(message)
        step_vector = axis * step

    affine = np.eye(4)
    affine[:3, 0] = row * column_spacing
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = step_vector
    affine[:3, 3] = ordered[0].position
    return _StackPlan(ordered, affine, targets, notes, warns)


def _integer_valued(value: float) -> bool:
    return float(value).is_integer()


def _output_dtype(slices: list[_Slice]) -> tuple[np.dtype, bool]:
    """Output dtype for the rescaled values, and whether each slice must be range-checked.

    Identity rescale keeps the stored type; integer rescale gives int16 when the values
    fit (guaranteed by BitsStored, or checked per slice), else float32.
    """
    header = slices[0].source.header
    if header.samples_per_pixel > 1 or header.photometric == "PALETTE COLOR":
        return np.dtype(np.uint8), False  # colour is shown as 8-bit grey
    stored = _stored_dtype(header)
    slopes = np.array([s.slope for s in slices])
    intercepts = np.array([s.intercept for s in slices])
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return stored, False
    if not all(_integer_valued(v) for v in np.concatenate([slopes, intercepts])):
        return np.dtype(np.float32), False
    bits = header.bits_stored or stored.itemsize * 8
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if header.signed else (0, (1 << bits) - 1)
    ends = np.concatenate([low * slopes + intercepts, high * slopes + intercepts])
    guaranteed = ends.min() >= _INT16.min and ends.max() <= _INT16.max
    return np.dtype(np.int16), not guaranteed


class _Overflow(Exception):
    pass


def _rescale_into(stored: np.ndarray, slope: float, intercept: float, out: np.ndarray, check: bool) -> None:
    """``out[...] = stored * slope + intercept`` without a float copy for integer maps."""
    if out.dtype == np.float32 or out.dtype == np.float64:
        np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
        if intercept:
            out += np.float32(intercept)
        return
    if slope == 1 and intercept == 0 and out.dtype == stored.dtype.newbyteorder("="):
        out[...] = stored
        return
    if check:
        low = float(stored.min()) * slope + intercept
        high = float(stored.max()) * slope + intercept
        low, high = min(low, high), max(low, high)
        info = np.iinfo(out.dtype)
        if low < info.min or high > info.max:
            raise _Overflow
    if slope == 1:
        np.add(stored, np.int32(intercept), out=out, casting="unsafe")
    else:
        np.add(stored.astype(np.int32) * np.int32(slope), np.int32(intercept), out=out, casting="unsafe")


def _load_stack(plan: _StackPlan, source: str) -> np.ndarray:
    """Allocate the output once and fill it slice by slice (interpolating where planned)."""
    slices = plan.slices
    header = slices[0].source.header
    rows, columns = header.rows, header.columns
    dtype, check = _output_dtype(slices)
    n_out = len(plan.targets)
    check_fits_in_memory((n_out, rows, columns), dtype, source)
    out = np.empty((n_out, rows, columns), dtype)
    raw_buffer = np.empty((rows, columns), slices[0].source.raw_dtype)
    cache: dict[int, np.ndarray] = {}

    def stored_of(index: int) -> np.ndarray:
        piece = slices[index]
        if piece.source.fast and piece.source.raw_dtype == raw_buffer.dtype:
            piece.source.read_grey_into(piece.frame_index, raw_buffer)
            return raw_buffer
        frame, photometric = piece.source.decode(piece.frame_index)
        return _grey_frame(frame, photometric, piece.source.header, piece.source.header.dataset)

    def float_of(index: int) -> np.ndarray:
        if index not in cache:
            if len(cache) >= 2:
                cache.pop(min(cache))
            values = np.empty((rows, columns), np.float32)
            piece = slices[index]
            _rescale_into(stored_of(index), piece.slope, piece.intercept, values, False)
            cache[index] = values
        return cache[index]

    k = 0
    while k < n_out:
        a, b, weight = plan.targets[k]
        try:
            if weight == 0.0:
                piece = slices[a]
                direct = (
                    piece.source.fast
                    and piece.slope == 1
                    and piece.intercept == 0
                    and piece.source.raw_dtype == dtype
                )
                if direct:  # stored values are the output: read straight into place
                    piece.source.read_grey_into(piece.frame_index, out[k])
                else:
                    _rescale_into(stored_of(a), piece.slope, piece.intercept, out[k], check)
            else:
                blend = float_of(a) * np.float32(1 - weight) + float_of(b) * np.float32(weight)
                if np.issubdtype(dtype, np.integer):
                    np.rint(blend, out=blend)
                    info = np.iinfo(dtype)
                    if check and (blend.min() < info.min or blend.max() > info.max):
                        raise _Overflow
                out[k] = blend
        except _Overflow:
            # Integer rescale did not fit int16 after all: continue in float32.
            check_fits_in_memory((n_out, rows, columns), np.float32, source, copies=1.5)
            out = out.astype(np.float32)
            dtype, check = np.dtype(np.float32), False
            continue
        k += 1
    return out


def _slices_from_series(headers: list[_FileHeader]) -> list[_Slice]:
    slices = []
    for header in headers:
        spacing = header.pixel_spacing
        slices.append(
            _Slice(
                source=_PixelSource(header),
                frame_index=0,
                position=header.position,
                orientation=header.orientation,
                pixel_spacing=spacing if spacing is not None and spacing.shape == (2,) else np.ones(2),
                slope=header.slope,
                intercept=header.intercept,
                thickness=_number(header.dataset.get("SliceThickness"), 0.0) or None,
                tie_key=(header.acquisition_number, header.instance_number, header.path.name, header.sop_instance_uid),
            )
        )
    return slices


def _units_for(modality: str, dataset) -> str:
    if modality == "CT":
        return "HU"
    rescale_type = _text(dataset, "RescaleType")
    return "" if rescale_type in ("", "US") else rescale_type


def _base_metadata(header: _FileHeader) -> dict[str, Any]:
    dataset = header.dataset
    return {
        "patient_name": _text(dataset, "PatientName"),
        "patient_id": _text(dataset, "PatientID"),
        "series_description": _text(dataset, "SeriesDescription"),
        "series_uid": header.series_uid,
        "study_description": _text(dataset, "StudyDescription"),
        "study_date": _text(dataset, "StudyDate"),
        "modality": header.modality,
        "frame_of_reference_uid": _text(dataset, "FrameOfReferenceUID"),
        "transfer_syntax": header.transfer_syntax,
        "photometric_interpretation": header.photometric,
        "notes": [],
    }


def _emit(warns: list[str], source) -> None:
    for message in warns:
        warnings.warn(f"{source}: {message}", DicomWarning, stacklevel=3)


# --------------------------------------------------------------------------- folders
def read_dicom_folder(folder, *, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (recursively) into a :class:`Volume`.

    Parameters
    ----------
    folder : str or Path
        Any file names and order; non-DICOM files are ignored.
    series_uid : str, optional
        SeriesInstanceUID to read; by default the series with most slices/frames.

    Returns
    -------
    Volume
        ``array`` (nk, nj, ni) ordered along the slice normal; CT in HU (int16 when
        exact, else float32); ``metadata`` with ``patient_name``, ``patient_id``,
        ``series_description``, ``series_uid``, ``study_description``, ``modality``,
        ``series`` (every image series found, as dicts), ``notes`` (what was changed or
        assumed) and ``n_files``.

    Raises
    ------
    InputError
        Empty folder, no image series, unknown ``series_uid`` (the message lists the
        ones found), mixed orientation/pixel size/image size, undecodable compression,
        or a volume too large for memory.
    """
    folder = _check_folder(folder)
    scan = _scan_folder(folder)
    if not scan.series:
        raise _no_series_error(scan)
    infos = _sorted_series(scan)
    if series_uid is None:
        chosen = infos[0].series_uid
    elif series_uid in scan.series:
        chosen = series_uid
    else:
        found = ", ".join(
            f"{info.series_uid} ({info.modality}, {info.n_frames} frames"
            + (f", '{info.description}'" if info.description else "")
            + ")"
            for info in infos
        )
        raise InputError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found: {found}")

    headers = scan.series[chosen]
    label = f"series {chosen or '(no SeriesInstanceUID)'}"
    notes = scan.notes()
    warns: list[str] = []
    broken = [h for h in headers if h.pixel_problem]
    usable = [h for h in headers if not h.pixel_problem]
    if broken:
        names = ", ".join(f"{h.path.name} ({h.pixel_problem})" for h in broken[:5])
        more = "" if len(broken) <= 5 else f" and {len(broken) - 5} more"
        message = f"{len(broken)} file(s) of the series left out: {names}{more}"
        notes.append(message)
        warns.append(message)
    if not usable:
        raise InputError(f"{folder}: every file of {label} has unusable pixel data: {names}")

    if len(usable) == 1 and (usable[0].n_frames > 1 or not usable[0].has_slice_geometry):
        volume = read_dicom_file(usable[0].path)
        volume.metadata["notes"] = notes + volume.metadata.get("notes", [])
    else:
        if any(h.n_frames > 1 for h in usable):
            raise InputError(
                f"{folder}: {label} holds {len(usable)} multi-frame files; open one of them "
                f"directly, e.g. {usable[0].path}"
            )
        missing = [h for h in usable if not h.has_slice_geometry]
        if missing:
            raise InputError(
                f"{folder}: {label} ({usable[0].modality}) holds {len(usable)} images, "
                f"{len(missing)} without ImagePositionPatient/ImageOrientationPatient, so they "
                f"are not slices of one volume; open one file directly, e.g. {missing[0].path}"
            )
        sizes = {(h.rows, h.columns, h.samples_per_pixel, h.bits_allocated) for h in usable}
        if len(sizes) > 1:
            raise InputError(
                f"{folder}: {label} mixes image sizes/pixel formats "
                f"({', '.join(f'{r}x{c}' for r, c, _, _ in sorted(sizes))}): not one volume"
            )
        for header in {h.transfer_syntax: h for h in usable}.values():
            _check_decodable(header)
        plan = _plan_stack(_slices_from_series(usable), str(folder), label)
        array = _load_stack(plan, str(folder))
        first = plan.slices[0].source.header
        notes += plan.notes
        warns += plan.warnings
        metadata = _base_metadata(first)
        metadata["notes"] = notes
        colour = first.samples_per_pixel > 1 or first.photometric == "PALETTE COLOR"
        if colour:
            metadata["notes"].append(f"colour ({first.photometric}) converted to grey luminance")
        volume = Volume(
            array,
            plan.affine,
            modality=first.modality,
            units=_units_for(first.modality, first.dataset),
            metadata=metadata,
        )
    volume.metadata["series"] = [info.to_dict() for info in infos]
    volume.metadata["n_files"] = len(usable)
    volume.metadata["source"] = str(folder)
    _emit(warns, folder)
    return volume


# --------------------------------------------------------------------------- single files
def _functional_item(group, sequence_keyword: str):
    if group is None:
        return None
    items = group.get(sequence_keyword)
    return items[0] if items else None


def _enhanced_slices(header: _FileHeader) -> list[_Slice] | None:
    """Per-frame slices of an enhanced multi-frame file, or None without frame positions."""
    dataset = header.dataset
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None
    source = _PixelSource(header)

    def lookup(group, sequence_keyword, keyword):
        for candidate in (group, shared):
            item = _functional_item(candidate, sequence_keyword)
            if item is not None and keyword in item:
                return item.get(keyword)
        return None

    slices = []
    for index, group in enumerate(per_frame):
        position = _float_list(lookup(group, "PlanePositionSequence", "ImagePositionPatient"))
        orientation = _float_list(
            lookup(group, "PlaneOrientationSequence", "ImageOrientationPatient")
        )
        if position is None or orientation is None:
            return None
        spacing = _float_list(lookup(group, "PixelMeasuresSequence", "PixelSpacing"))
        slope = lookup(group, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = lookup(group, "PixelValueTransformationSequence", "RescaleIntercept")
        content = _functional_item(group, "FrameContentSequence")
        dimension = tuple(content.get("DimensionIndexValues") or ()) if content else ()
        slices.append(
            _Slice(
                source=source,
                frame_index=index,
                position=position,
                orientation=orientation,
                pixel_spacing=spacing if spacing is not None else np.ones(2),
                slope=_number(slope, header.slope) or 1.0,
                intercept=_number(intercept, header.intercept),
                thickness=_number(lookup(group, "PixelMeasuresSequence", "SliceThickness"), 0.0)
                or None,
                tie_key=(0, index, dimension, ""),
            )
        )
    return slices


def _ultrasound_calibration(dataset) -> tuple[float, float, dict | None, list[str]]:
    """Pixel size (mm along x/columns, y/rows) from SequenceOfUltrasoundRegions.

    Picks the largest 2D region whose units are centimetres in both directions.
    Returns ``(dx_mm, dy_mm, region, notes)``; ``(1, 1, None, [note])`` if uncalibrated.
    """
    candidates = []
    for region in dataset.get("SequenceOfUltrasoundRegions") or []:
        if int(region.get("RegionSpatialFormat", 0) or 0) != REGION_SPATIAL_2D:
            continue
        if int(region.get("PhysicalUnitsXDirection", 0) or 0) != PHYSICAL_UNITS_CM:
            continue
        if int(region.get("PhysicalUnitsYDirection", 0) or 0) != PHYSICAL_UNITS_CM:
            continue
        dx = abs(_number(region.get("PhysicalDeltaX"), 0.0)) * 10.0
        dy = abs(_number(region.get("PhysicalDeltaY"), 0.0)) * 10.0
        if dx <= 0 or dy <= 0:
            continue
        x0, y0 = int(region.get("RegionLocationMinX0", 0)), int(region.get("RegionLocationMinY0", 0))
        x1, y1 = int(region.get("RegionLocationMaxX1", 0)), int(region.get("RegionLocationMaxY1", 0))
        area = max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)
        candidates.append((area, dx, dy, {"x0": x0, "y0": y0, "x1": x1, "y1": y1}))
    if not candidates:
        return 1.0, 1.0, None, [
            "uncalibrated: no 2D ultrasound region with physical units in cm; "
            "pixel spacing set to 1 (not mm)"
        ]
    candidates.sort(key=lambda c: -c[0])
    _, dx, dy, box = candidates[0]
    notes = [
        f"ultrasound calibration from the largest 2D region (columns {box['x0']}-{box['x1']}, "
        f"rows {box['y0']}-{box['y1']}): {dx:.4g} x {dy:.4g} mm per pixel"
    ]
    others = {(round(c[1], 6), round(c[2], 6)) for c in candidates[1:]}
    if others - {(round(dx, 6), round(dy, 6))}:
        notes.append("other ultrasound regions have a different calibration; only the largest is used")
    return dx, dy, box, notes


def _frame_times(dataset, n_frames: int) -> tuple[np.ndarray | None, str]:
    """Seconds from the first frame, from FrameTimeVector, FrameTime, CineRate or the
    display frame rate (in the order FrameIncrementPointer asks, then that order)."""
    candidates = []
    pointer = dataset.get("FrameIncrementPointer")
    if pointer is None:
        pointers = []
    elif isinstance(pointer, int):
        pointers = [pointer]
    else:
        pointers = list(pointer)
    names = {0x00181065: "FrameTimeVector", 0x00181063: "FrameTime"}
    for tag in pointers:
        name = names.get(int(tag))
        if name:
            candidates.append(name)
    candidates += ["FrameTimeVector", "FrameTime", "CineRate", "RecommendedDisplayFrameRate"]
    for name in candidates:
        value = dataset.get(name)
        if value in (None, ""):
            continue
        if name == "FrameTimeVector":
            increments = _float_list(value)
            if increments is not None and increments.size == n_frames:
                # Each entry is the time (ms) since the previous frame; the first is 0.
                return np.cumsum(increments) / 1000.0, ""
            continue
        number = _number(value, 0.0)
        if number <= 0:
            continue
        period = number / 1000.0 if name == "FrameTime" else 1.0 / number
        return np.arange(n_frames) * period, ""
    return None, "no frame timing (FrameTime, FrameTimeVector, CineRate)"


def _decode_planar(header: _FileHeader, source: _PixelSource) -> tuple[np.ndarray, list[str]]:
    """All frames of a file as display grey ``(n_frames, rows, cols)``."""
    dataset = header.dataset
    notes = []
    colour = header.samples_per_pixel > 1 or header.photometric == "PALETTE COLOR"
    if colour:
        dtype = np.dtype(np.uint8)
    else:
        probe = _Slice(source, 0, np.zeros(3), np.zeros(6), np.ones(2), header.slope,
                       header.intercept, None, ())
        dtype, needs_check = _output_dtype([probe])
        if needs_check:  # rare for 2D images: take the always-exact float32
            dtype = np.dtype(np.float32)
    shape = (header.n_frames, header.rows, header.columns)
    check_fits_in_memory(shape, dtype, header.path)
    out = np.empty(shape, dtype)
    for index in range(header.n_frames):
        if not colour and source.fast:
            buffer = np.empty((header.rows, header.columns), source.raw_dtype)
            source.read_grey_into(index, buffer)
            frame, photometric = buffer, header.photometric
        else:
            frame, photometric = source.decode(index)
        grey = _grey_frame(frame, photometric, header, dataset)
        if colour:
            out[index] = grey
        else:
            _rescale_into(grey, header.slope, header.intercept, out[index], False)
    if colour:
        notes.append(f"colour ({header.photometric}) converted to uint8 grey luminance (BT.601)")
    elif header.photometric == "MONOCHROME1" and np.issubdtype(out.dtype, np.integer):
        top = (1 << header.bits_stored) - 1 if not header.signed else np.iinfo(out.dtype).max
        np.subtract(top, out, out=out, casting="unsafe")
        notes.append("MONOCHROME1 inverted so that bright means high signal")
    return out, notes


def _read_planar(header: _FileHeader) -> Volume:
    """Ultrasound and other 2D images without patient geometry: frame(s) in the image plane."""
    dataset = header.dataset
    source = _PixelSource(header)
    _check_decodable(header)
    array, notes = _decode_planar(header, source)
    is_ultrasound = header.modality == "US" or header.sop_class_uid in ULTRASOUND_SOP_CLASSES
    metadata = _base_metadata(header)
    if is_ultrasound:
        dx, dy, region, calibration_notes = _ultrasound_calibration(dataset)
        notes = calibration_notes + notes
        metadata["ultrasound_region"] = region
        notes.append(
            "ultrasound has no patient position: world frame is the image plane "
            "(x along columns, y down rows, origin at the top-left pixel)"
        )
    else:
        spacing = _float_list(dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing"))
        if spacing is not None and spacing.shape == (2,) and np.all(spacing > 0):
            dy, dx = spacing
            notes.append("no patient position: world frame is the image plane")
        else:
            dx = dy = 1.0
            notes.append("uncalibrated: no pixel spacing or patient position; spacing set to 1")
    frame_times = None
    n_frames = header.n_frames
    if n_frames > 1:
        frame_times, timing_note = _frame_times(dataset, n_frames)
        if frame_times is None and is_ultrasound:
            frame_times = np.arange(n_frames, dtype=float)
            notes.append(timing_note + ": frame_times are frame numbers, not seconds")
        if frame_times is not None:
            period = frame_times[-1] / (n_frames - 1) if n_frames > 1 else 0
            notes.append(
                f"cine loop: axis 0 is time ({n_frames} frames, {period * 1000:.4g} ms apart), not depth"
            )
        else:
            notes.append(
                f"{n_frames} frames without geometry or timing stacked along k at 1 (not mm)"
            )
    affine = np.diag([dx, dy, 1.0, 1.0])
    metadata["notes"] = notes
    metadata["calibrated"] = not any(note.startswith("uncalibrated") for note in notes)
    modality = "US" if is_ultrasound else header.modality
    return Volume(
        array,
        affine,
        modality=modality,
        units=_units_for(modality, dataset),
        frame_times=frame_times,
        metadata=metadata,
    )


def read_dicom_file(path) -> Volume:
    """Read one DICOM file into a :class:`Volume`.

    Handles enhanced multi-frame CT/MR (per-frame functional groups: plane position,
    plane orientation, pixel measures, pixel value transformation), classic single
    slices (a one-slice volume), ultrasound single frames and multi-frame cines, and
    other 2D images.

    Returns
    -------
    Volume
        Spatial volumes as in :func:`read_dicom_folder`. A cine has ``array``
        ``(n_frames, rows, cols)`` and ``frame_times`` in seconds; ultrasound is in its
        image plane: i along columns and j down rows, spacing in mm from the largest
        calibrated 2D region (``metadata["notes"]`` says "uncalibrated" and the spacing
        is 1 when there is none). Colour becomes uint8 grey (0-255).

    Raises
    ------
    InputError
        Not DICOM, unreadable header, no pixel data (e.g. DICOMDIR, structured report),
        truncated pixel data, undecodable compression, or too large for memory.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        header = _read_header(path)
    except _NotDicom:
        raise InputError(f"{path}: not a DICOM file") from None
    if header.sop_class_uid == MEDIA_DIRECTORY_STORAGE:
        raise InputError(f"{path}: a DICOMDIR (an index of files, no image); read its folder instead")
    if header.pixel_problem == "no pixel data" or not header.is_image:
        kind = _describe_sop_class(header.sop_class_uid)
        if _is_image_storage(header.sop_class_uid):
            raise InputError(f"{path}: no pixel data (a {kind} file cut short?)")
        raise InputError(f"{path}: no pixel data ({kind} holds no image)")
    if header.pixel_problem:
        raise InputError(f"{path}: {header.pixel_problem}")
    _check_decodable(header)

    if header.has_slice_geometry and header.n_frames == 1:
        slices = _slices_from_series([header])
        label = "file"
    else:
        slices = _enhanced_slices(header)
        label = "multi-frame file"
        if slices is None and header.has_slice_geometry and header.modality not in ("US",):
            offsets = _float_list(header.dataset.get("GridFrameOffsetVector"))
            if offsets is not None and offsets.size == header.n_frames:
                slices = _grid_offset_slices(header, offsets)
    if slices is None:
        volume = _read_planar(header)
        if _is_enhanced(header) and volume.frame_times is None:
            volume.metadata["notes"].append(
                "enhanced multi-frame file without per-frame plane positions: no geometry"
            )
        volume.metadata["series"] = [_series_info([header]).to_dict()]
        return volume

    plan = _plan_stack(slices, str(path), label)
    array = _load_stack(plan, str(path))
    metadata = _base_metadata(header)
    metadata["notes"] = plan.notes
    if header.samples_per_pixel > 1 or header.photometric == "PALETTE COLOR":
        metadata["notes"].append(f"colour ({header.photometric}) converted to grey luminance")
    metadata["series"] = [_series_info([header]).to_dict()]
    _emit(plan.warnings, path)
    return Volume(
        array,
        plan.affine,
        modality=header.modality,
        units=_units_for(header.modality, header.dataset),
        metadata=metadata,
    )


def _is_enhanced(header: _FileHeader) -> bool:
    dataset = header.dataset
    return "SharedFunctionalGroupsSequence" in dataset or "PerFrameFunctionalGroupsSequence" in dataset or header.sop_class_uid in (
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    )


def _grid_offset_slices(header: _FileHeader, offsets: np.ndarray) -> list[_Slice]:
    """Frames of a multi-frame file positioned by GridFrameOffsetVector (e.g. RT dose)."""
    orientation = header.orientation
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    source = _PixelSource(header)
    spacing = header.pixel_spacing if header.pixel_spacing is not None else np.ones(2)
    # Offsets are either relative (first 0) or absolute (first = the IPP's depth); both
    # put frame 0 at ImagePositionPatient.
    offsets = offsets - offsets[0]
    return [
        _Slice(
            source=source,
            frame_index=index,
            position=header.position + offset * normal,
            orientation=orientation,
            pixel_spacing=spacing,
            slope=header.slope,
            intercept=header.intercept,
            thickness=None,
            tie_key=(0, index, "", ""),
        )
        for index, offset in enumerate(offsets)
    ]
