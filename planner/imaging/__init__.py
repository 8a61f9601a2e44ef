"""Reading medical images into :class:`planner.volume.Volume`.

One entry point, :func:`read_volume`, picks the reader from the path:

- a folder: a DICOM series (the one with most slices unless ``series_uid`` is given);
- ``.dcm`` or any file with the DICOM preamble: single-file DICOM (multi-frame CT/MR,
  ultrasound single frame or cine);
- ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``: through SimpleITK;
- ``.vti``: VTK XML image;
- ``.inv3``: an InVesalius project (gzipped tar with a plist and a raw int16 volume).

Every failure is an :class:`planner.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

from planner.errors import InputError
from planner.volume import Volume

ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_volume(path, *, series_uid: str | None = None, modality: str | None = None) -> Volume:
    """Read an image file or DICOM folder into a :class:`Volume`.

    Parameters
    ----------
    path : str or Path
        A file or a folder holding a DICOM series.
    series_uid : str, optional
        For a folder with several DICOM series, the SeriesInstanceUID to load.
    modality : str, optional
        Overrides the modality for formats that do not record it (e.g. ``"US"`` for a
        3D ultrasound NRRD).

    Raises
    ------
    InputError
        When the path does not exist or holds nothing readable; the message names it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        from planner.imaging.dicom import read_dicom_folder

        volume = read_dicom_folder(path, series_uid=series_uid)
    else:
        name = path.name.lower()
        if name.endswith(ITK_SUFFIXES):
            from planner.imaging.formats import read_itk

            volume = read_itk(path)
        elif name.endswith(".vti"):
            from planner.imaging.formats import read_vti

            volume = read_vti(path)
        elif name.endswith(".inv3"):
            from planner.imaging.inv3 import read_inv3

            volume = read_inv3(path)
        else:
            from planner.imaging.dicom import is_dicom_file, read_dicom_file

            if not is_dicom_file(path):
                raise InputError(
                    f"{path}: not a recognised image file (expected DICOM, NIfTI, NRRD, "
                    "MetaImage, VTI or InVesalius .inv3)"
                )
            volume = read_dicom_file(path)
    if modality:
        from planner.imaging.formats import units_for_modality

        volume.modality = modality.upper()
        volume.units = units_for_modality(volume.modality)
    volume.metadata.setdefault("source", str(path))
    return volume
