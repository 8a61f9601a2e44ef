"""Write a :class:`~planner.volume.Volume` as a classic single-frame DICOM series.

One file per slice, Explicit VR Little Endian, unsigned 16-bit stored values with
``RescaleSlope``/``RescaleIntercept`` chosen so that integer volumes (CT in HU) come
back exactly. The geometry follows the volume's affine, oblique and left-handed
(descending slice positions) included:

- ``ImageOrientationPatient`` = unit i axis (along a row) then unit j axis (down a column);
- ``PixelSpacing`` = ``[row spacing, column spacing]`` = ``[|a_j|, |a_i|]`` mm;
- ``ImagePositionPatient`` of slice k = ``origin + k * a_k``;
- ``SliceThickness`` and ``SpacingBetweenSlices`` = the slice step along the normal.

Used by the tests and the benchmark to build series with known answers; it is also the
basis of a future DICOM export. Files written here are research data, not for clinical use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from planner.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_SOP_CLASS_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
_UINT16_MAX = 65535


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    from pydicom.valuerep import format_number_as_ds

    value = float(value)
    if abs(value) < 1e-12:  # avoid "-0.0" and 1e-17 noise from rotations
        value = 0.0
    return format_number_as_ds(value)


def _uid(rng: np.random.Generator | None) -> str:
    from pydicom.uid import generate_uid

    if rng is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[rng.bytes(16).hex()])


def _slice_geometry(volume: Volume):
    """Row direction, column direction, pixel spacing [row, col] and slice step vector."""
    affine = volume.affine
    axis_i, axis_j, axis_k = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    spacing_i, spacing_j = np.linalg.norm(axis_i), np.linalg.norm(axis_j)
    row_direction, column_direction = axis_i / spacing_i, axis_j / spacing_j
    if abs(float(row_direction @ column_direction)) > 1e-6:
        raise ValueError(
            "DICOM needs perpendicular row and column directions; this affine shears i against j"
        )
    return row_direction, column_direction, (spacing_j, spacing_i), axis_k


def _stored_values(array: np.ndarray):
    """Choose per-slice rescale and return ``(stored uint16 slices, slopes, intercepts)``.

    Integer data that spans at most 65535 values is stored exactly with slope 1 and one
    integer intercept (the minimum, like a CT scanner's -1024). Anything else gets a
    per-slice linear map onto 0..65535 (lossy, about 1/65535 of each slice's range).
    """
    n_slices = array.shape[0]
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        low, high = int(array.min()), int(array.max())
        if high - low <= _UINT16_MAX:
            intercept = min(low, 0)
            if high - intercept > _UINT16_MAX:
                intercept = low
            return None, np.ones(n_slices), np.full(n_slices, float(intercept))
    slopes = np.empty(n_slices)
    intercepts = np.empty(n_slices)
    for k in range(n_slices):
        low, high = float(np.min(array[k])), float(np.max(array[k]))
        intercepts[k] = low
        slopes[k] = (high - low) / _UINT16_MAX if high > low else 1.0
    return "per-slice", slopes, intercepts


def write_dicom_series(
    volume: Volume,
    folder,
    *,
    series_uid: str | None = None,
    series_description: str = "",
    modality: str | None = None,
    shuffle_names: bool = False,
    rng: np.random.Generator | int | None = None,
    study_uid: str | None = None,
    series_number: int = 1,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice into ``folder``.

    Parameters
    ----------
    volume : Volume
        A spatial volume (not a cine loop), array ``(nk, nj, ni)``; any affine whose
        i and j axes are perpendicular (oblique and descending k allowed).
    folder : str or Path
        Created if missing. Existing files are left alone (names may collide only if
        the same names are written twice).
    series_uid : str, optional
        SeriesInstanceUID; a new one is generated if omitted.
    series_description : str
        SeriesDescription.
    modality : str, optional
        ``"CT"``, ``"MR"`` or anything else (written as Secondary Capture with that
        Modality); defaults to ``volume.modality``.
    shuffle_names : bool
        Random file names without extension (so neither name order nor extension
        says anything about slice order); otherwise ``slice_0001.dcm``, ...
    rng : numpy.random.Generator or int, optional
        Source of the random names and UIDs (for reproducible files).
    study_uid : str, optional
        StudyInstanceUID, to put several series in one study.
    series_number : int
        SeriesNumber.

    Returns
    -------
    list of Path
        The files written, in slice order ``k = 0 .. nk-1``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    if volume.is_cine:
        raise ValueError("write_dicom_series writes spatial volumes, not cine loops")
    if isinstance(rng, (int, np.integer)) or rng is None and shuffle_names:
        rng = np.random.default_rng(rng)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modality = (modality or volume.modality or "OT").upper()
    sop_class = _SOP_CLASS_BY_MODALITY.get(modality, SECONDARY_CAPTURE_STORAGE)
    series_uid = series_uid or _uid(rng)
    study_uid = study_uid or _uid(rng)
    frame_of_reference_uid = volume.metadata.get("frame_of_reference_uid") or _uid(rng)

    row_direction, column_direction, pixel_spacing, step = _slice_geometry(volume)
    normal = np.cross(row_direction, column_direction)
    slice_step = abs(float(step @ normal))
    orientation = [_ds(v) for v in (*row_direction, *column_direction)]
    array = volume.array
    n_slices, rows, columns = array.shape
    mode, slopes, intercepts = _stored_values(array)

    names = [f"slice_{k + 1:04d}.dcm" for k in range(n_slices)]
    if shuffle_names:
        names = [rng.bytes(8).hex() for _ in range(n_slices)]

    template = Dataset()
    template.SOPClassUID = sop_class
    template.StudyInstanceUID = study_uid
    template.SeriesInstanceUID = series_uid
    template.FrameOfReferenceUID = frame_of_reference_uid
    template.Modality = modality
    template.SeriesDescription = series_description
    template.StudyDescription = str(volume.metadata.get("study_description", ""))
    template.PatientName = str(volume.metadata.get("patient_name") or "Anonymous")
    template.PatientID = str(volume.metadata.get("patient_id") or "cryoplan")
    template.StudyDate = "20000101"
    template.SeriesNumber = series_number
    template.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    template.Manufacturer = "cryoplan (research use only)"
    template.ImageOrientationPatient = orientation
    template.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    template.SliceThickness = _ds(slice_step)
    template.SpacingBetweenSlices = _ds(slice_step)
    template.SamplesPerPixel = 1
    template.PhotometricInterpretation = "MONOCHROME2"
    template.Rows = rows
    template.Columns = columns
    template.BitsAllocated = 16
    template.BitsStored = 16
    template.HighBit = 15
    template.PixelRepresentation = 0
    if modality == "CT":
        template.RescaleType = "HU"

    paths = []
    for k in range(n_slices):
        dataset = Dataset()
        dataset.update(template)
        instance_uid = _uid(rng)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        dataset.file_meta = meta
        dataset.SOPInstanceUID = instance_uid
        dataset.InstanceNumber = k + 1
        position = volume.affine[:3, 3] + k * step
        dataset.ImagePositionPatient = [_ds(v) for v in position]
        dataset.SliceLocation = _ds(float(position @ normal))
        dataset.RescaleSlope = _ds(slopes[k])
        dataset.RescaleIntercept = _ds(intercepts[k])
        if mode is None:
            stored = (array[k].astype(np.int64) - int(intercepts[k])).astype("<u2")
        else:
            # Divide by the slope as written (DS rounding) so the reader's map matches.
            slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
            scaled = np.rint((array[k].astype(np.float64) - intercept) / slope)
            stored = np.clip(scaled, 0, _UINT16_MAX).astype("<u2")
        dataset.PixelData = stored.tobytes()
        path = folder / names[k]
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths
