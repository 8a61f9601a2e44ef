"""Tissue label maps from CT Hounsfield units.

A deliberately small classifier: thresholds on HU inside a body mask, and a skin shell
measured in millimetres. It is good enough to give the thermal solver the right
properties in the right places (fat insulates, bone conducts poorly, air-bearing lung
holds little heat); it does not find nerves or vessels, which come from a label map or
from traced points.
"""

from __future__ import annotations

import numpy as np

from planner.errors import InputError
from planner.imaging.memory import check_fits_in_memory
from planner.labels import Tissue
from planner.volume import Volume

BODY_THRESHOLD_HU = -500.0
"""Voxels above this are tissue; the body is the largest connected region of them."""

FAT_RANGE_HU = (-190.0, -30.0)
"""Fat, inclusive at both ends. Inside the body, below the fat range is air-bearing (lung)."""

BONE_THRESHOLD_HU = 250.0
"""Above this is bone. Between fat and bone (-30, 250] is soft tissue, which includes
contrast-enhanced blood and the partial-volume edge of bone around 150-250 HU."""

SKIN_THICKNESS_MM = 1.5


def body_mask(hu: np.ndarray, *, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """The patient's body: the largest connected region above ``threshold_hu``, holes filled.

    Parameters
    ----------
    hu : (nk, nj, ni) ndarray
        CT values in Hounsfield units.
    threshold_hu : float
        Tissue/air threshold, HU.

    Returns
    -------
    (nk, nj, ni) bool ndarray
        True inside the body. Internal air (lungs, bowel gas) is inside. Holes are
        filled in 3D and then slice by slice along axis 0, because air in the lungs
        reaches the edge of the scan through the airway or the cut field of view and
        so is not a closed hole in 3D.
    """
    from scipy import ndimage

    tissue = hu > threshold_hu
    components, n_components = ndimage.label(tissue)
    if n_components == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # background
    body = components == int(np.argmax(sizes))
    del components
    body = ndimage.binary_fill_holes(body)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def skin_shell(body: np.ndarray, spacing_kji, *, thickness_mm: float = SKIN_THICKNESS_MM) -> np.ndarray:
    """The outer shell of a body mask, ``thickness_mm`` thick, measured in millimetres.

    Parameters
    ----------
    body : (nk, nj, ni) bool ndarray
        Body mask.
    spacing_kji : sequence of 3 floats
        Voxel size along array axes ``(k, j, i)``, mm.
    thickness_mm : float
        Shell thickness, mm.

    Returns
    -------
    (nk, nj, ni) bool ndarray
        True where a body voxel lies within ``thickness_mm`` of the body surface. The
        surface is taken half a voxel outside the outermost voxel centres, so a voxel is in
        the shell when its distance to the nearest outside voxel centre is at most
        ``thickness_mm`` plus half the smallest spacing. Every body voxel with an outside
        face neighbour is in the shell too, so the shell is closed even where a coarse
        spacing exceeds the thickness. Where the body meets the edge of the array (the
        scan's field of view cut through the patient) there is no skin.
    """
    from scipy import ndimage

    spacing_kji = np.asarray(spacing_kji, dtype=float)
    if not np.any(body):
        return np.zeros(body.shape, dtype=bool)
    # Distance from each body voxel centre to the nearest outside voxel centre, in mm.
    depth_mm = ndimage.distance_transform_edt(body, sampling=spacing_kji)
    shell = body & (depth_mm <= thickness_mm + 0.5 * spacing_kji.min())
    outside_neighbour = body & ~ndimage.binary_erosion(body, border_value=1)
    return shell | outside_neighbour


def tissue_from_ct(
    ct: Volume,
    *,
    body_threshold_hu: float = BODY_THRESHOLD_HU,
    fat_range_hu: tuple[float, float] = FAT_RANGE_HU,
    bone_threshold_hu: float = BONE_THRESHOLD_HU,
    skin_thickness_mm: float = SKIN_THICKNESS_MM,
    soft_tissue_label: Tissue = Tissue.SOFT_TISSUE,
) -> Volume:
    """Classify a CT volume into :class:`planner.labels.Tissue` labels by HU ranges.

    Parameters
    ----------
    ct : Volume
        CT in Hounsfield units, array ``(nk, nj, ni)``.
    body_threshold_hu : float
        Tissue/air threshold for the body mask, HU.
    fat_range_hu : (float, float)
        Fat, inclusive, HU.
    bone_threshold_hu : float
        Bone above this, HU.
    skin_thickness_mm : float
        Thickness of the skin shell at the body surface, mm.
    soft_tissue_label : Tissue
        Label for the soft-tissue range; ``Tissue.SOFT_TISSUE`` (generic) by default,
        ``Tissue.MUSCLE`` to use muscle properties.

    Returns
    -------
    Volume
        ``uint8`` labels, same shape and affine as ``ct``, modality ``"SEG"``:
        ``AIR`` outside the body; inside it ``SKIN`` (the outer shell), ``LUNG`` (air
        inside the body, below the fat range), ``FAT``, soft tissue, ``BONE``.

    Raises
    ------
    InputError
        When ``ct`` is a cine loop, an ultrasound image or a label map, or has units other
        than HU, or the work arrays would not fit in memory.
    """
    source = ct.metadata.get("source", "CT volume")
    if ct.is_cine:
        raise InputError(f"{source}: a cine loop has no tissue map; pick one frame")
    if ct.modality in ("US", "SEG") or (ct.units and ct.units.upper() != "HU"):
        what = f"modality {ct.modality}" + (f", values in {ct.units!r}" if ct.units else "")
        raise InputError(f"{source}: tissue from HU needs a CT in HU, this volume is {what}")
    if not fat_range_hu[0] < fat_range_hu[1] < bone_threshold_hu:
        raise InputError(f"{source}: HU thresholds must increase: fat {fat_range_hu}, bone {bone_threshold_hu}")
    # Float work arrays (HU, distances) plus a few masks and labels.
    check_fits_in_memory(ct.array.shape, np.float64, source, copies=3.0)

    hu = np.asarray(ct.array, dtype=np.float32)
    body = body_mask(hu, threshold_hu=body_threshold_hu)

    labels = np.full(hu.shape, int(soft_tissue_label), dtype=np.uint8)
    labels[hu < fat_range_hu[0]] = Tissue.LUNG
    labels[(hu >= fat_range_hu[0]) & (hu <= fat_range_hu[1])] = Tissue.FAT
    labels[hu > bone_threshold_hu] = Tissue.BONE
    spacing_kji = ct.spacing[::-1]
    labels[skin_shell(body, spacing_kji, thickness_mm=skin_thickness_mm)] = Tissue.SKIN
    labels[~body] = Tissue.AIR

    return Volume(
        labels,
        ct.affine.copy(),
        modality="SEG",
        units="label",
        metadata={"source": f"tissue_from_ct({source})", "derived_from": "ct_hu"},
    )
