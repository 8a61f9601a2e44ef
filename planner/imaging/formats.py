"""Read and write research image formats: NIfTI, NRRD, MetaImage and VTK XML image.

Every reader returns a :class:`planner.volume.Volume` in world LPS millimetres with the
full direction matrix kept, and every failure is one :class:`InputError` line naming
the file and the problem (the native libraries' multi-line messages are condensed).

Readers
-------
- :func:`read_itk` for ``.nii``/``.nii.gz`` (NIfTI-1/2), ``.nrrd``/``.nhdr`` (NRRD, the
  latter with detached data) and ``.mha``/``.mhd`` (MetaImage). NRRD and MetaImage go
  through SimpleITK. NIfTI goes through nibabel because SimpleITK (ITK 5.4) silently
  reads a truncated NIfTI as zero-filled, silently accepts a broken ``sizeof_hdr``,
  and departs from the NIfTI rule for choosing between sform and qform (it falls back
  to the qform when the sform's column scales differ from ``pixdim``, and cannot keep
  a sheared sform); nibabel follows the standard and is the reference other tools use.
- :func:`read_vti` for ``.vti`` through VTK's XML reader, keeping the direction matrix
  that VTK >= 9.1 stores (``pyvista.read`` keeps it too, but the plain reader is used so
  that errors can be caught and no rendering module is imported).

Writer
------
:func:`write_volume` picks the format from the suffix (``.nii``, ``.nii.gz``, ``.nrrd``,
``.mha``, ``.vti``) and keeps the affine and the modality:

======== =================================== ======================================
format   geometry stored                      modality stored as
======== =================================== ======================================
NIfTI-1  sform and qform (code 1, scanner),   ``descrip`` "cryoplan modality=CT";
         float32 (so about 1e-7 relative)     label maps also get intent LABEL
NRRD     space directions/origin, LPS,        key/value ``Modality:=CT``
         17 significant digits
MHA      TransformMatrix/Offset, 17 digits    header key ``DICOM_Modality = CT``
VTI      Origin/Spacing/Direction, float64    field data string array ``modality``
======== =================================== ======================================

Modality on reading: from the keys above, from the standard MetaImage ``Modality``
field (``MET_MOD_CT``...), from a NRRD ``modality`` key, or from a NIfTI intent LABEL
(-> ``"SEG"``); otherwise ``"OT"``. A volume that merely looks like a label map
(integers, few values) is *not* guessed to be one: it stays ``"OT"`` with a note in
``metadata["notes"]``, and the caller passes ``modality=`` to
:func:`planner.imaging.read_volume`.

Decisions
---------
- 4D images (a time series or several 3D volumes) are refused with an InputError that
  says so: picking one volume silently would plan on an arbitrary frame. A 4th axis of
  length 1 is dropped.
- Two-component or vector images (displacement fields, tensors) are refused; RGB and
  RGBA are converted to grey luminance (ITU-R BT.601 weights, float32), with a note.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.imaging.memory import check_fits_in_memory
from planner.volume import Volume, affine_from_geometry

logger = logging.getLogger(__name__)

#: Maps NIfTI's RAS world to DICOM/ITK LPS world (its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Suffixes :func:`write_volume` understands.
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".vti")

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

NIFTI_INTENT_LABEL = 1002
# NIfTI xyzt_units spatial codes -> millimetres per unit (0 = unknown: mm assumed).
NIFTI_SPATIAL_UNIT_MM = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 1e-3}

# MetaImage's own modality field (MET_MOD_*) names only these.
METAIMAGE_MODALITIES = {"MET_MOD_CT": "CT", "MET_MOD_MR": "MR", "MET_MOD_US": "US", "MET_MOD_NM": "NM"}
MHA_MODALITY_KEY = "DICOM_Modality"
NRRD_MODALITY_KEY = "Modality"
NIFTI_MODALITY_PATTERN = re.compile(r"modality\s*[=:]\s*([A-Za-z]{2,4})\b", re.IGNORECASE)

# A volume of integers with at most this many distinct values in [0, 255] gets a
# "looks like a label map" note.
LABEL_MAP_MAX_VALUES = 32


# ---------------------------------------------------------------------------- shared
def units_for_modality(modality: str) -> str:
    """Units implied by a modality: ``"HU"`` for CT, ``"label"`` for SEG, else ``""``."""
    modality = (modality or "").upper()
    return {"CT": "HU", "SEG": "label"}.get(modality, "")


def _one_line(text: str, *, limit: int = 300) -> str:
    """Collapse whitespace and newlines so a message stays one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NativeOutput:
    """Context manager that catches what C/C++ libraries write to the process's file
    descriptors (ITK warnings on stderr, MetaIO's reasons on stdout) so they neither
    litter the terminal nor get lost: the text is kept in :attr:`text` for the error
    message. Python-level writes by other threads during the call are caught as well
    and logged at debug level; the calls wrapped here are short.
    """

    def __init__(self, *, fds=(2,)):
        self.fds = tuple(fds)
        self.text = ""
        self._saved: list[tuple[int, int]] = []
        self._sink = None

    def __enter__(self) -> "_NativeOutput":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or odd stream must not break reading
                pass
        try:
            self._sink = tempfile.TemporaryFile()
            for fd in self.fds:
                self._saved.append((fd, os.dup(fd)))
                os.dup2(self._sink.fileno(), fd)
        except OSError:  # no such descriptor (daemon): nothing to capture
            self._restore()
        return self

    def _restore(self) -> None:
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []

    def __exit__(self, *exc_info) -> None:
        self._restore()
        if self._sink is not None:
            self._sink.seek(0)
            self.text = self._sink.read().decode("utf-8", errors="replace")
            self._sink.close()
            self._sink = None
        if self.text.strip() and exc_info[0] is None:
            logger.debug("native library output: %s", _one_line(self.text, limit=2000))


def _condense_native_error(message: str, native_output: str = "") -> str:
    """Turn a SimpleITK/ITK/teem/MetaIO error dump into one short phrase.

    SimpleITK messages look like ``Exception thrown in SimpleITK ...: /path/x.cxx:99:\\n
    sitk::ERROR: Unable to determine ...``; NRRD adds a ``[nrrd]`` call stack whose last
    line is the cause; MetaIO prints the real reason on stdout and a misleading
    ``Reason: No such file or directory`` in the exception.
    """
    combined = f"{native_output}\n{message}"
    truncated = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", combined)
    if truncated:
        ideal, actual = truncated.groups()
        return f"pixel data is truncated: expected {ideal} bytes, found {actual}"
    if "Cannot open data file" in native_output:
        return "cannot open the separate data file its header names"
    if "Unable to determine ImageIO reader" in message:
        return "no NIfTI, NRRD or MetaImage reader recognises its header (not an image file, or a damaged one)"

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    nrrd_lines = [line for line in lines if line.startswith("[nrrd]")]
    if nrrd_lines:
        cause = re.sub(r"^\[nrrd\]\s*\w+:\s*", "", nrrd_lines[-1]).strip()
        return _one_line(f"NRRD: {cause}" if cause else "NRRD reader failed")
    kept = []
    for line in lines:
        if line.startswith("Exception thrown in SimpleITK"):
            continue
        line = re.sub(r"^\S+\.(cxx|hxx|h|cpp):\d+:\s*", "", line)
        line = re.sub(r"^(sitk::ERROR:|ITK ERROR:|itk::ERROR:)\s*", "", line)
        line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
        if line.startswith("Reason: No such file or directory"):
            continue  # MetaIO says this for every read failure; it is rarely the cause
        if line:
            kept.append(line)
    return _one_line("; ".join(kept) or "the image library gave no reason")


def _to_grey(array: np.ndarray, *, source) -> np.ndarray:
    """RGB(A) array ``(..., 3|4)`` -> float32 luminance ``(...)``."""
    components = array.shape[-1]
    if components not in (3, 4):
        raise InputError(
            f"{source}: has {components} components per voxel (a vector or tensor image); "
            "cryoplan reads scalar (grey) or RGB volumes only"
        )
    rgb = array[..., :3].astype(np.float32, copy=False)
    return rgb @ LUMA_WEIGHTS.astype(np.float32)


def _label_map_note(array: np.ndarray) -> str | None:
    """A note when ``array`` looks like a label map, so the caller can say so."""
    if array.dtype.kind not in "iub" or array.size == 0:
        return None
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        return None
    distinct = int(np.count_nonzero(np.bincount(array.ravel().astype(np.intp), minlength=1)))
    if distinct > LABEL_MAP_MAX_VALUES:
        return None
    return (
        f"integer image with only {distinct} distinct values in [{low}, {high}]: it may be a "
        "label map; pass modality='SEG' if so (not guessed)"
    )


def _finish(array, affine, *, modality: str | None, metadata: dict, source) -> Volume:
    """Build the Volume, set units from the modality and add the label-map note."""
    notes = metadata.setdefault("notes", [])
    modality = (modality or "OT").upper()
    if modality == "OT":
        note = _label_map_note(array)
        if note:
            notes.append(note)
    try:
        return Volume(
            array, affine, modality=modality, units=units_for_modality(modality), metadata=metadata
        )
    except ValueError as error:  # degenerate geometry written into the header
        raise InputError(f"{source}: unusable image geometry: {error}") from None


# ---------------------------------------------------------------------------- NIfTI
def _check_nifti_header_size(path: Path) -> None:
    """Refuse a NIfTI whose first field (``sizeof_hdr``) is not 348 or 540.

    nibabel repairs this field silently; a wrong value means a damaged or foreign
    file, and its other fields cannot be trusted either.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            head = stream.read(540)
    except gzip.BadGzipFile:
        raise InputError(f"{path}: cannot read the NIfTI header: the file is not gzip-compressed despite its .gz suffix") from None
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read the NIfTI header: {_one_line(error)}") from None
    if len(head) < 4:
        raise InputError(f"{path}: file is too short to hold a NIfTI header ({len(head)} bytes)")
    little, big = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    header_size = ({little, big} & {348, 540}).pop() if {little, big} & {348, 540} else None
    if header_size is None:
        raise InputError(
            f"{path}: not a NIfTI file, or a broken header: sizeof_hdr is {little}, expected "
            "348 (NIfTI-1) or 540 (NIfTI-2)"
        )
    if len(head) < header_size:
        raise InputError(
            f"{path}: truncated NIfTI header: {len(head)} bytes where the header needs {header_size}"
        )


def _nifti_modality(header) -> str | None:
    if int(header.get("intent_code", 0)) == NIFTI_INTENT_LABEL:
        return "SEG"
    for field in ("descrip", "intent_name"):
        try:
            text = bytes(np.asarray(header[field]).item()).decode("latin-1")
        except (KeyError, AttributeError, TypeError, ValueError):
            continue
        found = NIFTI_MODALITY_PATTERN.search(text)
        if found:
            return found.group(1).upper()
    return None


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    _check_nifti_header_size(path)
    try:
        image = nib.load(str(path), mmap=False)
    except Exception as error:  # nibabel raises many types for damaged headers
        raise InputError(f"{path}: not a readable NIfTI file: {_one_line(error)}") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI file (nibabel sees {type(image).__name__})")
    header = image.header
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise InputError(
            f"{path}: is a {len(shape)}D image of shape {shape} (a time series or several "
            "volumes); cryoplan reads one 3D volume: extract the one you want first"
        )
    if len(shape) < 2:
        raise InputError(f"{path}: NIfTI image of shape {shape} is not a 2D or 3D image")

    raw_dtype = header.get_data_dtype()
    # nibabel moves the scaling out of a loaded image's header into its data proxy.
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    scaled = (slope, inter) != (1.0, 0.0)
    components = 1
    if raw_dtype.names:  # RGB24 / RGBA32 as a structured dtype
        components = len(raw_dtype.names)
        out_dtype = np.dtype(np.float32)
    elif scaled:
        out_dtype = np.dtype(np.float32 if raw_dtype.itemsize <= 2 else np.float64)
    else:
        out_dtype = raw_dtype.newbyteorder("=")
    raw_share = raw_dtype.itemsize / out_dtype.itemsize
    check_fits_in_memory(shape, out_dtype, path, copies=1.0 + raw_share)

    try:
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except Exception as error:  # truncated data: OSError, EOFError, zlib.error, ValueError
        short = re.search(r"Expected (\d+) bytes, got (\d+) bytes", str(error))
        detail = (
            f"pixel data is truncated: expected {short.group(1)} bytes, found {short.group(2)}"
            if short
            else _one_line(error)
        )
        raise InputError(f"{path}: cannot read the NIfTI pixel data: {detail}") from None
    raw = raw.reshape(shape + raw.shape[len(image.shape) :])
    notes: list[str] = []
    if raw.dtype.names:
        raw = np.stack([raw[name] for name in raw.dtype.names], axis=-1)
        array = _to_grey(raw, source=path)
        notes.append(f"{components}-component colour image converted to grey luminance (BT.601)")
    elif scaled:
        array = raw.astype(out_dtype) * out_dtype.type(slope)
        array += out_dtype.type(inter)
    else:
        array = raw.astype(out_dtype, copy=False)
    # nibabel indexes (i, j, k); the planner stores [k, j, i]. For a Fortran-ordered
    # array (how NIfTI lays out voxels) the transpose is C-contiguous: no copy.
    array = np.ascontiguousarray(array.T if array.ndim == 3 else array.T[np.newaxis])

    ras = np.asarray(image.affine, dtype=float)
    spatial_code = int(header["xyzt_units"]) & 0x07
    mm_per_unit = NIFTI_SPATIAL_UNIT_MM.get(spatial_code, 1.0)
    if mm_per_unit != 1.0:
        ras = np.diag([mm_per_unit] * 3 + [1.0]) @ ras
        notes.append(f"spatial units code {spatial_code} converted to mm (x{mm_per_unit:g})")
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code == 0 and sform_code == 0:
        notes.append(
            "NIfTI has neither qform nor sform: orientation unknown; nibabel's fallback "
            "(axis-aligned, centred) is used"
        )
    metadata = {
        "format": "NIfTI-2" if isinstance(image, nib.Nifti2Image) else "NIfTI-1",
        "qform_code": qform_code,
        "sform_code": sform_code,
        "affine_source": "sform" if sform_code > 0 else ("qform" if qform_code > 0 else "fallback"),
        "description": bytes(np.asarray(header["descrip"]).item()).decode("latin-1").strip("\x00 "),
        "notes": notes,
    }
    if scaled:
        metadata["scl_slope"], metadata["scl_inter"] = slope, inter
    return _finish(array, LPS_FROM_RAS @ ras, modality=_nifti_modality(header), metadata=metadata, source=path)


# ---------------------------------------------------------------------------- NRRD / MetaImage
def _itk_modality(keys: dict[str, str]) -> str | None:
    for key, value in keys.items():
        if key.lower() not in ("modality", MHA_MODALITY_KEY.lower()):
            continue
        value = value.strip()
        if value.upper().startswith("MET_MOD_"):
            if value.upper() in METAIMAGE_MODALITIES:
                return METAIMAGE_MODALITIES[value.upper()]
            continue  # MET_MOD_UNKNOWN / MET_MOD_OTHER say nothing
        if re.fullmatch(r"[A-Za-z]{2,4}", value):
            return value.upper()
    return None


def _sitk_component_dtype(pixel_id: int, *, source) -> np.dtype:
    """numpy type of one component of a SimpleITK pixel type (scalar or vector)."""
    import SimpleITK as sitk

    by_name = {
        "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16,
        "Int32": np.int32, "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64,
        "Float32": np.float32, "Float64": np.float64,
    }
    for name, dtype in by_name.items():
        if pixel_id in (getattr(sitk, f"sitk{name}", None), getattr(sitk, f"sitkVector{name}", None)):
            return np.dtype(dtype)
    raise InputError(f"{source}: unsupported pixel type {sitk.GetPixelIDValueAsString(pixel_id)}")


def _read_simpleitk(path: Path) -> Volume:
    import SimpleITK as sitk

    metaimage = path.name.lower().endswith((".mha", ".mhd"))
    # MetaIO prints the real reason for a failure on stdout; ITK warnings go to stderr.
    fds = (1, 2) if metaimage else (2,)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    native = _NativeOutput(fds=fds)
    try:
        with native:
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(
            f"{path}: cannot read the image header: {_condense_native_error(str(error), native.text)}"
        ) from None

    size = tuple(int(n) for n in reader.GetSize())  # (ni, nj, nk[, nt])
    while len(size) > 3 and size[-1] == 1:
        size = size[:-1]
    if len(size) > 3:
        raise InputError(
            f"{path}: is a {len(size)}D image of size {'x'.join(map(str, size))} (a time series or "
            "several volumes); cryoplan reads one 3D volume: extract the one you want first"
        )
    components = int(reader.GetNumberOfComponents())
    if components not in (1, 3, 4):
        raise InputError(
            f"{path}: has {components} components per voxel (a vector or tensor image); "
            "cryoplan reads scalar (grey) or RGB volumes only"
        )
    pixel_dtype = _sitk_component_dtype(reader.GetPixelID(), source=path)
    # SimpleITK's buffer plus the numpy copy, plus a float32 grey copy for colour.
    copies = 2.0 * components + (4.0 / pixel_dtype.itemsize if components > 1 else 0.0)
    check_fits_in_memory(size, pixel_dtype, path, copies=copies)

    native = _NativeOutput(fds=fds)
    try:
        with native:
            image = reader.Execute()
    except RuntimeError as error:
        raise InputError(
            f"{path}: cannot read the pixel data: {_condense_native_error(str(error), native.text)}"
        ) from None
    keys = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    array = sitk.GetArrayFromImage(image)  # [k, j, i] (, c) -- or [j, i] for 2D
    dimension = image.GetDimension()
    spacing = np.ones(3)
    origin = np.zeros(3)
    direction = np.eye(3)
    spacing[:dimension] = image.GetSpacing()[:3]
    origin[:dimension] = image.GetOrigin()[:3]
    full_direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    direction[: min(dimension, 3), : min(dimension, 3)] = full_direction[:3, :3]
    del image

    notes: list[str] = []
    if components > 1:
        array = _to_grey(array, source=path)
        notes.append(f"{components}-component colour image converted to grey luminance (BT.601)")
    if array.ndim == 4:  # a trailing unit axis dropped above
        array = array[0]
    metadata = {
        "format": "MetaImage" if metaimage else "NRRD",
        "header": {k: v for k, v in keys.items() if not k.startswith("ITK_")},
        "notes": notes,
    }
    affine = affine_from_geometry(spacing, origin, direction)
    return _finish(array, affine, modality=_itk_modality(keys), metadata=metadata, source=path)


def read_itk(path) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file into a :class:`Volume`.

    Parameters
    ----------
    path : str or Path
        A ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr`` (detached data), ``.mha`` or
        ``.mhd`` (detached data) file.

    Returns
    -------
    Volume
        ``array`` indexed ``[k, j, i]`` in the file's own pixel type (float32 after
        NIfTI scaling or colour-to-grey conversion); ``affine`` maps ``(i, j, k, 1)`` to
        LPS mm with the full direction matrix (for NIfTI: nibabel's ``img.affine``, i.e.
        sform if ``sform_code > 0``, else qform, converted from RAS; spatial units in
        metres or microns are converted to mm); ``modality`` from the file when
        recorded, else ``"OT"``; ``units`` ``"HU"`` only for CT. ``metadata`` holds
        ``format``, header facts and ``notes`` (list of str).

    Raises
    ------
    InputError
        When the file is missing, not an image, damaged (broken header, truncated
        data), 4D, a vector image, or too large for memory; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return _read_nifti(path)
    return _read_simpleitk(path)


# ---------------------------------------------------------------------------- VTI
class _VtkErrors:
    """Route VTK's error and warning text into a list while a reader or writer runs,
    instead of printing it to the terminal."""

    def __enter__(self) -> "_VtkErrors":
        from vtkmodules.vtkCommonCore import vtkOutputWindow, vtkStringOutputWindow

        self.messages: list[str] = []
        # vtkLogger also writes errors straight to stderr, past the output window.
        self._native = _NativeOutput(fds=(2,)).__enter__()
        self._previous = vtkOutputWindow.GetInstance()
        self._window = vtkStringOutputWindow()
        vtkOutputWindow.SetInstance(self._window)
        return self

    def watch(self, vtk_object) -> None:
        """Collect errors raised by ``vtk_object`` itself (they bypass the window)."""
        from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand

        def on_error(_caller, _event, text=None):
            self.messages.append(str(text))

        on_error.CallDataType = VTK_STRING
        vtk_object.AddObserver(vtkCommand.ErrorEvent, on_error)

    def __exit__(self, *exc_info) -> None:
        from vtkmodules.vtkCommonCore import vtkOutputWindow

        window_text = self._window.GetOutput()
        if window_text:
            self.messages.append(window_text)
        vtkOutputWindow.SetInstance(self._previous)
        self._native.__exit__(*exc_info)

    def summary(self) -> str:
        """The VTK error text as one line: each distinct message body, without the
        source locations, object addresses and pipeline-request dumps."""
        bodies: list[str] = []
        for message in self.messages:
            for block in re.split(r"\n\s*\n", message):
                text = " ".join(block.split())
                text = re.sub(r"^(ERROR|Warning|Generic Warning):\s*In\s+\S+,\s*line\s*\d+\s*", "", text)
                text = re.sub(r"^\w+\s*\(0x[0-9a-fA-F]+\):\s*", "", text)
                if not text or (text.startswith("Algorithm ") and "returned failure for request" in text):
                    continue  # the executive's dump repeats that some reader failed
                text = re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", text)
                if text not in bodies:
                    bodies.append(text)
        return _one_line("; ".join(bodies) or "VTK gave no reason")


def read_vti(path) -> Volume:
    """Read a VTK XML image (``.vti``) into a :class:`Volume`, keeping its direction.

    The file's world frame is taken to be LPS (as cryoplan writes it). The active point
    scalars are read (else the first point array); a colour array becomes grey
    luminance. A ``modality`` (and ``units``) string array in the field data, as
    :func:`write_volume` stores it, sets the modality.

    Parameters
    ----------
    path : str or Path
        A ``.vti`` file.

    Raises
    ------
    InputError
        When the file is not a readable VTK image, holds no point array, is too large
        for memory, or holds a vector array; one line naming the file.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
    from vtkmodules.vtkIOXML import vtkXMLImageDataReader

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    reader = vtkXMLImageDataReader()
    reader.SetFileName(str(path))
    with _VtkErrors() as errors:
        errors.watch(reader)
        readable = reader.CanReadFile(str(path))
        if readable:
            reader.UpdateInformation()
    if not readable or errors.messages:
        detail = errors.summary() if errors.messages else "not a VTK XML ImageData file"
        raise InputError(f"{path}: cannot read the VTK image header: {detail}")

    extent = reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.WHOLE_EXTENT())
    dims = tuple(int(extent[2 * a + 1] - extent[2 * a] + 1) for a in range(3))
    # The array type is unknown until the data is read: budget for float64 and 3 copies.
    check_fits_in_memory(dims, np.float64, path, copies=2.0)

    with _VtkErrors() as errors:
        errors.watch(reader)
        reader.Update()
    image = reader.GetOutput()
    if errors.messages:
        raise InputError(f"{path}: cannot read the VTK image data: {errors.summary()}")
    point_data = image.GetPointData()
    scalars = point_data.GetScalars() or (point_data.GetArray(0) if point_data.GetNumberOfArrays() else None)
    if scalars is None:
        kind = "cell data only" if image.GetCellData().GetNumberOfArrays() else "no data arrays"
        raise InputError(f"{path}: VTK image has {kind}; cryoplan needs a point (voxel) array")
    ni, nj, nk = image.GetDimensions()
    values = vtk_to_numpy(scalars)
    notes: list[str] = []
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2:
        values = _to_grey(values, source=path)
        notes.append(f"{scalars.GetNumberOfComponents()}-component colour array converted to grey luminance (BT.601)")
    array = np.array(values.reshape(nk, nj, ni), copy=True)

    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.array([[image.GetDirectionMatrix().GetElement(r, c) for c in range(3)] for r in range(3)])
    # A VTK extent need not start at 0: voxel (0,0,0) of the array is the extent's first point.
    first_index = np.array(image.GetExtent()[::2], dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float) + direction @ (spacing * first_index)

    field = image.GetFieldData()
    modality = None
    string_array = field.GetAbstractArray("modality") if field is not None else None
    if string_array is not None and string_array.GetNumberOfValues() > 0:
        modality = str(string_array.GetValue(0)).strip().upper() or None
    metadata = {"format": "VTI", "array_name": scalars.GetName() or "", "notes": notes}
    affine = affine_from_geometry(spacing, origin, direction)
    return _finish(array, affine, modality=modality, metadata=metadata, source=path)


# ---------------------------------------------------------------------------- writing
def _writable_array(volume: Volume, path: Path) -> np.ndarray:
    array = np.ascontiguousarray(volume.array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind not in "iuf":
        raise InputError(f"{path}: cannot write voxels of type {array.dtype} (need integers or floats)")
    return array


def _write_nifti(volume: Volume, array: np.ndarray, path: Path) -> None:
    import nibabel as nib

    ras = LPS_FROM_RAS @ volume.affine
    # nibabel indexes (i, j, k): the transpose of a C-ordered [k, j, i] array is a
    # Fortran-ordered view, which is how NIfTI lays out voxels: no copy.
    image = nib.Nifti1Image(array.T, ras)
    header = image.header
    image.set_sform(ras, code=1)
    columns = ras[:3, :3] / np.linalg.norm(ras[:3, :3], axis=0)
    if np.allclose(columns.T @ columns, np.eye(3), atol=1e-6):
        image.set_qform(ras, code=1)
    else:  # the qform is a rotation: it cannot hold a sheared affine, the sform does
        image.set_qform(None, code=0)
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = f"cryoplan modality={volume.modality}"[:79].encode()
    if volume.modality.upper() == "SEG":
        header.set_intent("label")
    nib.save(image, str(path))


def _write_simpleitk(volume: Volume, array: np.ndarray, path: Path, *, suffix: str) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in volume.direction.ravel()])
    key = NRRD_MODALITY_KEY if suffix == ".nrrd" else MHA_MODALITY_KEY
    image.SetMetaData(key, volume.modality)
    native = _NativeOutput(fds=(1, 2) if suffix == ".mha" else (2,))
    try:
        with native:
            sitk.WriteImage(image, str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot write: {_condense_native_error(str(error), native.text)}") from None


def _write_vti(volume: Volume, array: np.ndarray, path: Path) -> None:
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkStringArray
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkIOXML import vtkXMLImageDataWriter

    image = vtkImageData()
    ni, nj, nk = volume.shape_xyz
    image.SetDimensions(ni, nj, nk)
    image.SetSpacing(*[float(s) for s in volume.spacing])
    image.SetOrigin(*[float(o) for o in volume.origin])
    image.SetDirectionMatrix(*[float(d) for d in volume.direction.ravel()])
    values = numpy_to_vtk(array.ravel(order="C"), deep=True)
    values.SetName("values")
    image.GetPointData().SetScalars(values)
    for name, text in (("modality", volume.modality), ("units", volume.units)):
        strings = vtkStringArray()
        strings.SetName(name)
        strings.InsertNextValue(text)
        image.GetFieldData().AddArray(strings)
    writer = vtkXMLImageDataWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    writer.SetHeaderTypeToUInt64()  # UInt32 block headers cap an array at 4 GiB
    with _VtkErrors() as errors:
        errors.watch(writer)
        ok = writer.Write()
    if not ok or errors.messages:
        detail = errors.summary() if errors.messages else "VTK writer failed"
        raise InputError(f"{path}: cannot write: {detail}")


def write_volume(volume: Volume, path) -> Path:
    """Write ``volume`` to ``path``; the format follows the suffix.

    Parameters
    ----------
    volume : Volume
        A spatial volume (not a cine loop: its time axis would be lost).
    path : str or Path
        Ends in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.vti``. The folder must exist.

    Returns
    -------
    Path
        The path written.

    Notes
    -----
    The array is written exactly, in its own type (bool as uint8, float16 as float32).
    The affine is kept exactly in NRRD, MHA and VTI (17 significant digits or float64)
    and to float32 precision in NIfTI-1 (about 1e-7 relative: ~1e-5 mm at 100 mm);
    non-orthogonal (sheared) axes are kept by NIfTI's sform, NRRD and VTI. The modality
    is stored as the module docstring's table says; CT units (HU) follow from it.

    Raises
    ------
    InputError
        For an unknown suffix, a cine loop, a voxel type the format cannot hold, or a
        path that cannot be written.
    """
    path = Path(path)
    name = path.name.lower()
    suffix = next((s for s in WRITE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise InputError(f"{path}: unknown output format; use one of {', '.join(WRITE_SUFFIXES)}")
    if volume.is_cine:
        raise InputError(
            f"{path}: cannot write a cine loop ({volume.n_frames} frames) as a volume file: "
            "its frame times would be lost"
        )
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    array = _writable_array(volume, path)
    try:
        if suffix in (".nii", ".nii.gz"):
            _write_nifti(volume, array, path)
        elif suffix in (".nrrd", ".mha"):
            _write_simpleitk(volume, array, path, suffix=suffix)
        else:
            _write_vti(volume, array, path)
    except OSError as error:
        raise InputError(f"{path}: cannot write: {_one_line(error.strerror or error)}") from None
    return path
