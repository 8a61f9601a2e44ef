"""Read an InVesalius 3 project file (``.inv3``) into a :class:`Volume`.

An ``.inv3`` file is a tar archive (gzipped or plain) holding one folder with
``main.plist`` (an XML property list: ``matrix`` {``filename``, ``shape``, ``dtype``},
``spacing``, ``modality``, ``name``, ``orientation``, ``scalar_range``,
``window_level``, ``window_width``...) and the raw voxel array it names (usually
``matrix.dat``, native little-endian, C order). Masks (``mask_N.plist``/``.dat``) and
surfaces (``surface_N.vtp``) are ignored here.

Geometry, worked out from the data and from how InVesalius fills its array
---------------------------------------------------------------------------
For an axial project the array is ``[slice, row, column]``: slices in the order
InVesalius sorted them (feet to head), and each DICOM image stored *bottom row first*
(InVesalius flips rows for VTK's lower-left image origin). On Debian's example head
CT (``Cranium.inv3``) mid-sagittal and axial slices show:

- the face, orbits and sinuses at high row index and the CT head-rest arc at low row
  index, so rows run posterior -> anterior: ``j`` -> ``-y`` (LPS);
- the orbits and skull base at slice 0 and the vertex at the last slice:
  ``k`` -> ``+z`` (superior);
- columns keep DICOM order (left unflipped by InVesalius), which for an axial CT runs
  from the patient's right to left: ``i`` -> ``+x``. A nearly symmetric skull cannot
  confirm this from the pixels; it is what InVesalius's loader does.

The plist records no position, so voxel ``(0, 0, 0)`` is put at world ``(0, 0, 0)`` mm;
``metadata["notes"]`` says so. Only axial projects are read; coronal and sagittal ones
(which InVesalius stores with other axis orders) raise :class:`InputError`.
"""

from __future__ import annotations

import plistlib
import posixpath
import tarfile
import zlib
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.imaging.formats import _one_line, units_for_modality
from planner.imaging.memory import check_fits_in_memory
from planner.volume import Volume

# InVesalius's orientation constants (AXIAL = 1, CORONAL = 2, SAGITAL = 3) or names.
AXIAL_ORIENTATIONS = {1, "1", "AXIAL"}
OTHER_ORIENTATIONS = {2: "coronal", "2": "coronal", "CORONAL": "coronal",
                      3: "sagittal", "3": "sagittal", "SAGITAL": "sagittal", "SAGITTAL": "sagittal"}
MODALITY_NAMES = {"MRI": "MR", "RMI": "MR"}

# Array axis -> world LPS direction, from the analysis in the module docstring.
AXIAL_DIRECTION = np.diag([1.0, -1.0, 1.0])

GEOMETRY_NOTES = (
    "InVesalius projects record no position: origin put at voxel (0, 0, 0) = (0, 0, 0) mm",
    "axes: i toward patient left (+x, DICOM column order, assumed), j toward anterior "
    "(-y; InVesalius stores image rows bottom-up), k toward superior (+z)",
)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, size: int, *, source) -> bytearray:
    """Read ``size`` bytes of ``member`` into a writable buffer, straight from the archive."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    try:
        stream = tar.extractfile(member)
        if stream is None:
            raise InputError(f"{source}: {member.name} in the archive is not a regular file")
        with stream:
            while filled < size:
                count = stream.readinto(view[filled:])
                if not count:
                    break
                filled += count
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise InputError(f"{source}: the archive is damaged while reading {member.name}: {_one_line(error)}") from None
    if filled < size:
        raise InputError(f"{source}: {member.name} is truncated: {filled} bytes read, {size} expected")
    return buffer


def _plist_field(plist: dict, key: str, source):
    try:
        return plist[key]
    except KeyError:
        raise InputError(f"{source}: main.plist has no {key!r} entry") from None


def read_inv3(path) -> Volume:
    """Read the image of an InVesalius 3 project (``.inv3``).

    Parameters
    ----------
    path : str or Path
        The ``.inv3`` file. Nothing is extracted to disk: members are read from the
        archive into memory.

    Returns
    -------
    Volume
        ``array`` ``(n_slices, n_rows, n_columns)`` in the stored type (int16 HU for
        CT); ``affine`` ``diag(sx, -sy, sz)`` with origin 0 (see the module docstring);
        ``modality`` from the plist (``"CT"`` -> units ``"HU"``); ``metadata`` with
        ``name``, ``window_level``, ``window_width``, ``scalar_range``,
        ``invesalius_version``, ``mask_files`` and ``notes``.

    Raises
    ------
    InputError
        When the file is not a tar archive, lacks ``main.plist`` or the matrix it
        names, the plist is invalid, the matrix is shorter or longer than
        ``shape * itemsize``, the project is not axial, or the volume would not fit in
        memory.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        raise InputError(f"{path}: not an InVesalius project: not a (gzipped) tar archive") from None
    with tar:
        try:
            members = [m for m in tar.getmembers() if m.isfile()]
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise InputError(f"{path}: the InVesalius archive is damaged or truncated ({_one_line(error)})") from None
        plists = [m for m in members if posixpath.basename(m.name) == "main.plist"]
        if not plists:
            raise InputError(f"{path}: not an InVesalius project: the archive has no main.plist")
        plist_member = plists[0]
        plist_bytes = _read_member(tar, plist_member, plist_member.size, source=path)
        try:
            plist = plistlib.loads(bytes(plist_bytes))
        except Exception as error:  # plistlib raises expat, ValueError, InvalidFileException...
            raise InputError(f"{path}: main.plist is not a valid property list ({_one_line(error)})") from None
        if not isinstance(plist, dict):
            raise InputError(f"{path}: main.plist does not hold a dictionary")

        matrix = _plist_field(plist, "matrix", path)
        spacing = _plist_field(plist, "spacing", path)
        try:
            shape = tuple(int(n) for n in matrix["shape"])
            dtype = np.dtype(str(matrix["dtype"])).newbyteorder("<")
            matrix_name = str(matrix.get("filename", "matrix.dat"))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: main.plist 'matrix' entry is invalid ({error})") from None
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"{path}: main.plist matrix shape {shape} is not a 3D shape")
        if dtype.kind not in "iuf":
            raise InputError(f"{path}: main.plist matrix dtype {dtype} is not a numeric type")
        try:
            spacing = [float(s) for s in spacing]
        except (TypeError, ValueError):
            raise InputError(f"{path}: main.plist 'spacing' is not a list of numbers") from None
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(f"{path}: main.plist spacing {spacing} is not three positive numbers (mm)")

        orientation = plist.get("orientation", 1)
        key = orientation.upper() if isinstance(orientation, str) else orientation
        notes = list(GEOMETRY_NOTES)
        if key in OTHER_ORIENTATIONS:
            raise InputError(
                f"{path}: InVesalius project acquired {OTHER_ORIENTATIONS[key]}; only axial projects are supported"
            )
        if key not in AXIAL_ORIENTATIONS:
            raise InputError(f"{path}: unknown InVesalius orientation {orientation!r}")
        if "orientation" not in plist:
            notes.append("orientation not recorded: axial assumed")

        folder = posixpath.dirname(plist_member.name)
        wanted = posixpath.join(folder, matrix_name) if folder else matrix_name
        matrix_members = [m for m in members if m.name == wanted]
        if not matrix_members:
            raise InputError(f"{path}: the archive has no {matrix_name} (the voxel array main.plist names)")
        matrix_member = matrix_members[0]
        expected = int(np.prod(shape)) * dtype.itemsize
        if matrix_member.size != expected:
            problem = "truncated" if matrix_member.size < expected else "longer than its header says"
            raise InputError(
                f"{path}: {matrix_name} is {problem}: {matrix_member.size} bytes, expected "
                f"{expected} for shape {'x'.join(map(str, shape))} of {dtype.name}"
            )
        check_fits_in_memory(shape, dtype, path)
        buffer = _read_member(tar, matrix_member, expected, source=path)

    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    affine = np.eye(4)
    affine[:3, :3] = AXIAL_DIRECTION @ np.diag(spacing)
    if plist.get("affine"):
        notes.append("the project carries an 'affine' entry (from a NIfTI import); it is not used")

    modality = str(plist.get("modality", "OT") or "OT").strip().upper()
    modality = MODALITY_NAMES.get(modality, modality)
    metadata = {
        "format": "InVesalius project",
        "name": str(plist.get("name", "")),
        "window_level": plist.get("window_level"),
        "window_width": plist.get("window_width"),
        "scalar_range": list(plist.get("scalar_range", [])) or None,
        "invesalius_version": plist.get("invesalius_version"),
        "mask_files": [str(m) for m in (plist.get("masks") or {}).values()],
        "notes": notes,
    }
    return Volume(array, affine, modality=modality, units=units_for_modality(modality), metadata=metadata)
