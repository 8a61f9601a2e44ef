"""Tissue label maps from label map files and from ultrasound, and the body they outline.

A tissue map is a ``uint8`` :class:`~planner.volume.Volume` of
:class:`planner.labels.Tissue` values (modality ``"SEG"``, units ``"label"``). CT gives
one through :func:`planner.tissue_map.tissue_from_ct` (HU ranges, body mask, skin shell);
this module adds the other two sources:

- a label map file (NIfTI, NRRD, MetaImage, VTI) whose values are mapped to tissue
  classes through a table of ``data/label_tables.toml`` (:func:`tissue_from_label_file`).
  Segmentations that label only some structures (a TotalSegmentator output, a Slicer
  segmentation) leave the rest "unlabelled"; those voxels take their class from a base
  map, typically the CT classified by HU, so the body outline and skin still come from
  the image.
- an ultrasound image without labels: soft tissue, with a skin layer at the transducer
  face (:func:`tissue_for_ultrasound`).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.imaging.memory import check_fits_in_memory
from planner.labels import Tissue
from planner.volume import Volume

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"
LABEL_TABLES_PATH = DATA_DIR / "label_tables.toml"

UNLABELLED = "unlabelled"
"""Pseudo tissue key of a table entry that segments nothing (a segmentation's background)."""

DEFAULT_TABLE = "cryoplan"
"""Table used for a label map without names: its values are :class:`Tissue` values."""
NAMED_TABLE = "generic"
"""Table used by default for a label map whose values carry names."""

ULTRASOUND_SKIN_MM = 1.5
"""Skin thickness put at the transducer face of an unlabelled ultrasound image, mm."""

GEOMETRY_TOLERANCE_MM = 1e-3
"""Two grids whose affines differ by less than this (mm) are the same grid."""

_MAX_LISTED_VALUES = 20


# ============================================================================ tables
@dataclass(frozen=True)
class LabelTable:
    """How the values of a label map become tissue classes.

    Parameters
    ----------
    name : str
        Table name in ``data/label_tables.toml``, e.g. ``"totalsegmentator-like"``.
    description : str
        One line for users.
    source : str
        Where the numbers and names come from.
    values : mapping of int to (str, str)
        ``{label value: (structure name, tissue key)}``; the tissue key is a
        :attr:`Tissue.key` or ``"unlabelled"``.
    names : tuple of (str, str)
        Ordered ``(pattern, tissue key)`` rules for values not in ``values`` whose name
        is known; the first shell-style pattern matching the normalised name wins.
    fallback : str or None
        Tissue key for values neither listed nor named; ``None`` makes them an error.
    """

    name: str
    description: str
    source: str
    values: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    names: tuple[tuple[str, str], ...] = ()
    fallback: str | None = None

    def classify(self, value: int, name: str | None = None) -> str | None:
        """Tissue key (or ``"unlabelled"``) of a label value, ``None`` when the table cannot say.

        ``values`` wins over name rules, name rules over ``fallback``.
        """
        if int(value) in self.values:
            return self.values[int(value)][1]
        if name is not None:
            normalised = normalise_structure_name(name)
            for pattern, tissue in self.names:
                if fnmatch.fnmatchcase(normalised, pattern):
                    return tissue
        return self.fallback

    def structure_name(self, value: int) -> str | None:
        """The table's name for a label value, if it lists one."""
        entry = self.values.get(int(value))
        return entry[0] if entry else None


def normalise_structure_name(name: str) -> str:
    """Lower case, spaces and dashes as ``_``: ``"Rib Left-7"`` -> ``"rib_left_7"``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _tissue_key_problem(value, where: str) -> str | None:
    keys = [t.key for t in Tissue] + [UNLABELLED]
    if not isinstance(value, str) or value not in keys:
        return f"{where}: expected a tissue key ({', '.join(keys)}), got {value!r}"
    return None


def load_label_tables(path=None) -> dict[str, LabelTable]:
    """Load the label tables.

    Parameters
    ----------
    path : str or Path, optional
        A label table TOML file; ``data/label_tables.toml`` by default.

    Returns
    -------
    dict of str to LabelTable
        Keyed by table name, in file order.

    Raises
    ------
    InputError
        When the file is unreadable or a table is malformed; every problem is listed,
        each as ``tables.<name>.<field>: <problem>``.
    """
    return dict(_load_label_tables_cached(Path(path) if path else LABEL_TABLES_PATH))


@lru_cache(maxsize=4)
def _load_label_tables_cached(path: Path) -> dict[str, LabelTable]:
    try:
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise InputError(f"{path}: label table file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"{path}: cannot read label tables: {error}") from None
    tables = document.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise InputError(f"{path}: no [tables.<name>] entries")
    problems: list[str] = []
    result: dict[str, LabelTable] = {}
    for name, entry in tables.items():
        where = f"tables.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a table")
            continue
        known = ("description", "source", "values", "names", "fallback")
        count = len(problems)
        for key in entry:
            if key not in known:
                problems.append(f"{where}.{key}: unknown field (known: {', '.join(known)})")
        for key in ("description", "source"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                problems.append(f"{where}.{key}: expected a non-empty string")
        values: dict[int, tuple[str, str]] = {}
        raw_values = entry.get("values", {})
        if not isinstance(raw_values, dict):
            problems.append(f"{where}.values: expected a table of <value> = {{ name, tissue }}")
            raw_values = {}
        for key, item in raw_values.items():
            item_where = f"{where}.values.{key}"
            try:
                value = int(key)
            except ValueError:
                problems.append(f"{item_where}: the key must be an integer label value")
                continue
            if not isinstance(item, dict) or set(item) != {"name", "tissue"}:
                problems.append(f"{item_where}: expected {{ name = \"...\", tissue = \"...\" }}")
                continue
            problem = _tissue_key_problem(item["tissue"], f"{item_where}.tissue")
            if problem:
                problems.append(problem)
                continue
            values[value] = (str(item["name"]), item["tissue"])
        rules: list[tuple[str, str]] = []
        raw_names = entry.get("names", [])
        if not isinstance(raw_names, list):
            problems.append(f"{where}.names: expected a list of {{ pattern, tissue }}")
            raw_names = []
        for index, rule in enumerate(raw_names):
            rule_where = f"{where}.names[{index}]"
            if not isinstance(rule, dict) or set(rule) != {"pattern", "tissue"} or not isinstance(rule["pattern"], str):
                problems.append(f"{rule_where}: expected {{ pattern = \"...\", tissue = \"...\" }}")
                continue
            problem = _tissue_key_problem(rule["tissue"], f"{rule_where}.tissue")
            if problem:
                problems.append(problem)
                continue
            rules.append((normalise_structure_name(rule["pattern"]), rule["tissue"]))
        fallback = entry.get("fallback")
        if fallback is not None:
            problem = _tissue_key_problem(fallback, f"{where}.fallback")
            if problem:
                problems.append(problem)
        if not values and not rules and fallback is None:
            problems.append(f"{where}: maps nothing (give values, names or a fallback)")
        if len(problems) == count:
            result[name] = LabelTable(
                name=name,
                description=entry["description"],
                source=entry["source"],
                values=values,
                names=tuple(rules),
                fallback=fallback,
            )
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return result


def get_label_table(name: str, *, path=None) -> LabelTable:
    """The label table called ``name``.

    Raises
    ------
    InputError
        When there is none; the message lists the known names.
    """
    tables = load_label_tables(path)
    if name not in tables:
        raise InputError(f"unknown label table {name!r}; known tables: {', '.join(tables)}")
    return tables[name]


# ============================================================================ label names
def label_names_from_header(volume: Volume) -> dict[int, str]:
    """Names of label values recorded in a file's header, ``{value: name}`` (may be empty).

    Reads the segment fields that 3D Slicer writes into a ``.seg.nrrd`` header
    (``Segment<N>_Name`` and ``Segment<N>_LabelValue``; a missing label value is ``N + 1``),
    as kept by :func:`planner.imaging.read_volume` in ``metadata["header"]``.
    """
    header = volume.metadata.get("header") or {}
    names: dict[int, str] = {}
    for key, text in header.items():
        match = re.fullmatch(r"Segment(\d+)_Name", str(key))
        if not match:
            continue
        index = int(match.group(1))
        value_text = header.get(f"Segment{index}_LabelValue")
        try:
            value = int(str(value_text).strip()) if value_text is not None else index + 1
        except ValueError:
            continue
        names[value] = str(text)
    return names


# ============================================================================ mapping
def _integer_labels(array: np.ndarray, source: str) -> np.ndarray:
    """``array`` as integers, refusing non-integral values (an image passed as a label map)."""
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not np.all(finite) or not np.array_equal(array, np.round(array)):
            raise InputError(f"{source}: not a label map: it holds non-integer values")
        return array.astype(np.int64)
    raise InputError(f"{source}: not a label map: values of type {array.dtype}")


def _same_grid(a: Volume, b: Volume) -> bool:
    return a.array.shape == b.array.shape and np.allclose(a.affine, b.affine, atol=GEOMETRY_TOLERANCE_MM)


def resample_labels_nearest(labels: Volume, target: Volume, *, fill_value: int = 0) -> np.ndarray:
    """Label values of ``labels`` at the voxel centres of ``target`` (nearest neighbour).

    Parameters
    ----------
    labels : Volume
        A label map (any integer values).
    target : Volume
        The grid to sample on.
    fill_value : int
        Value for target voxels outside ``labels``.

    Returns
    -------
    (nk, nj, ni) ndarray
        Same dtype as ``labels.array``, shape of ``target.array``.
    """
    nk, nj, ni = target.array.shape
    out = np.full((nk, nj, ni), fill_value, dtype=labels.array.dtype)
    jj, ii = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
    upper = np.array(labels.shape_xyz) - 1
    # One slice at a time: world coordinates of a whole volume would cost 24 bytes a voxel.
    for k in range(nk):
        ijk = np.stack([ii, jj, np.full_like(ii, k)], axis=-1)
        source_ijk = np.rint(labels.world_to_index(target.index_to_world(ijk))).astype(np.int64)
        inside = np.all((source_ijk >= 0) & (source_ijk <= upper), axis=-1)
        i, j, kk = (source_ijk[..., axis][inside] for axis in range(3))
        out[k][inside] = labels.array[kk, j, i]
    return out


def _base_tissue(base: Volume) -> Volume:
    """A tissue map from ``base``: a CT in HU is classified, a tissue map is used as it is."""
    from planner.tissue_map import tissue_from_ct

    source = base.metadata.get("source", "base volume")
    if base.units.upper() == "HU" or base.modality.upper() == "CT":
        return tissue_from_ct(base)
    if base.modality.upper() == "SEG" or base.units == "label":
        values = _integer_labels(np.asarray(base.array), source)
        if values.size and (values.min() < 0 or values.max() > max(Tissue)):
            raise InputError(f"{source}: a base tissue map must hold tissue values 0-{int(max(Tissue))}")
        return base
    raise InputError(f"{source}: base must be a CT in HU or a tissue label map, got modality {base.modality!r}")


def tissue_from_label_map(
    labels: Volume,
    table: str | LabelTable = DEFAULT_TABLE,
    *,
    base: Volume | None = None,
    label_names: Mapping[int, str] | None = None,
) -> Volume:
    """Map a label map's values to :class:`Tissue` classes through a label table.

    Parameters
    ----------
    labels : Volume
        Integer label map, array ``(nk, nj, ni)``.
    table : str or LabelTable
        A table of ``data/label_tables.toml`` by name, or a table object.
    base : Volume, optional
        Where the table says ``"unlabelled"`` (a segmentation's background), the class
        comes from this: a CT in HU (classified with
        :func:`planner.tissue_map.tissue_from_ct`) or a tissue map. When its grid differs
        from the label map's, the labels are resampled onto it (nearest neighbour) and the
        result is on the base's grid.
    label_names : mapping of int to str, optional
        Names of label values, for the table's name rules; by default those in the
        file's header (:func:`label_names_from_header`).

    Returns
    -------
    Volume
        ``uint8`` tissue labels, modality ``"SEG"``, units ``"label"``;
        ``metadata["label_table"]`` names the table.

    Raises
    ------
    InputError
        When values are neither in the table nor covered by its name rules or fallback
        (the message lists them), when the table needs a base and none is given, or when
        the map is not integer-valued or too large for memory.
    """
    source = str(labels.metadata.get("source", "label map"))
    if labels.is_cine:
        raise InputError(f"{source}: a cine loop is not a label map")
    if isinstance(table, str):
        table = get_label_table(table)
    names = dict(label_names) if label_names is not None else label_names_from_header(labels)

    base_tissue = _base_tissue(base) if base is not None else None
    if base_tissue is not None and not _same_grid(labels, base_tissue):
        check_fits_in_memory(base_tissue.array.shape, labels.array.dtype, source, copies=2.0)
        raw = resample_labels_nearest(labels, base_tissue, fill_value=_background_value(table))
        grid = base_tissue
    else:
        raw = np.asarray(labels.array)
        grid = labels
    check_fits_in_memory(raw.shape, np.int64, source, copies=1.5)
    raw = _integer_labels(raw, source)

    if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
        found = np.flatnonzero(np.bincount(raw.ravel(), minlength=1))
    else:
        found = np.unique(raw)
    classes: dict[int, str] = {}
    unknown: list[int] = []
    for value in (int(v) for v in found):
        tissue_key = table.classify(value, names.get(value))
        if tissue_key is None:
            unknown.append(value)
        else:
            classes[value] = tissue_key
    if unknown:
        listed = ", ".join(str(v) for v in unknown[:_MAX_LISTED_VALUES])
        more = f" and {len(unknown) - _MAX_LISTED_VALUES} more" if len(unknown) > _MAX_LISTED_VALUES else ""
        raise InputError(
            f"{source}: label values not in table {table.name!r}: {listed}{more} "
            f"(pick another table: {', '.join(load_label_tables())}, or give label names)"
        )
    needs_base = sorted(v for v, key in classes.items() if key == UNLABELLED)
    if needs_base and base_tissue is None:
        listed = ", ".join(f"{v} ({table.structure_name(v) or names.get(v) or 'unnamed'})" for v in needs_base)
        raise InputError(
            f"{source}: table {table.name!r} leaves label {listed} unlabelled (air and unsegmented "
            "tissue alike); pass the CT or a tissue map as base= to classify those voxels"
        )

    # One table look-up per voxel (a segmentation may hold a hundred values).
    present = np.array(sorted(classes), dtype=np.int64)
    tissue_of = np.array(
        [0 if classes[v] == UNLABELLED else int(Tissue[classes[v].upper()]) for v in present], dtype=np.uint8
    )
    unlabelled_of = np.array([classes[v] == UNLABELLED for v in present], dtype=bool)
    if present.size and present[0] >= 0 and present[-1] <= np.iinfo(np.uint16).max:
        index = raw
        lookup_tissue = np.zeros(int(present[-1]) + 1, dtype=np.uint8)
        lookup_unlabelled = np.zeros(int(present[-1]) + 1, dtype=bool)
        lookup_tissue[present], lookup_unlabelled[present] = tissue_of, unlabelled_of
    else:
        index = np.searchsorted(present, raw)
        lookup_tissue, lookup_unlabelled = tissue_of, unlabelled_of
    out = lookup_tissue[index]
    if np.any(unlabelled_of):
        unlabelled = lookup_unlabelled[index]
        out[unlabelled] = np.asarray(base_tissue.array)[unlabelled]
    return Volume(
        out,
        grid.affine.copy(),
        modality="SEG",
        units="label",
        metadata={
            "source": f"tissue_from_label_map({source})",
            "derived_from": "labels",
            "label_table": table.name,
        },
    )


def _background_value(table: LabelTable) -> int:
    """A value the table leaves unlabelled (for voxels outside a resampled label map), else 0."""
    for value, (_, tissue_key) in sorted(table.values.items()):
        if tissue_key == UNLABELLED:
            return value
    return 0


def tissue_from_label_file(
    path,
    table: str | LabelTable | None = None,
    *,
    base: Volume | None = None,
    label_names: Mapping[int, str] | None = None,
) -> Volume:
    """Read a label map file and map its values to :class:`Tissue` classes.

    Parameters
    ----------
    path : str or Path
        NIfTI, NRRD (including a 3D Slicer ``.seg.nrrd`` with one layer), MetaImage or VTI.
    table : str or LabelTable, optional
        A table of ``data/label_tables.toml``: ``"cryoplan"`` (values are
        :class:`Tissue` values), ``"generic"`` (classes from segment names),
        ``"totalsegmentator-like"`` (TotalSegmentator v2 "total" numbering), or a table
        object. By default ``"generic"`` when the values have names (from the header or
        ``label_names``), otherwise ``"cryoplan"``.
    base : Volume, optional
        CT in HU or a tissue map classifying the voxels the table leaves unlabelled; see
        :func:`tissue_from_label_map`.
    label_names : mapping of int to str, optional
        ``{value: structure name}`` overriding names found in the header.

    Returns
    -------
    Volume
        ``uint8`` tissue labels in world LPS mm (the file's grid, or ``base``'s grid when
        they differ).

    Raises
    ------
    InputError
        When the file cannot be read, is not a label map, holds values the table does
        not map (listed in the message), or needs a ``base`` that was not given.
    """
    from planner.imaging import read_volume

    labels = read_volume(path, modality="SEG")
    names = dict(label_names) if label_names is not None else label_names_from_header(labels)
    if table is None:
        table = NAMED_TABLE if names else DEFAULT_TABLE
    return tissue_from_label_map(labels, table, base=base, label_names=names)


# ============================================================================ ultrasound
def tissue_for_ultrasound(
    us_volume: Volume,
    *,
    skin_thickness_mm: float = ULTRASOUND_SKIN_MM,
    face_row: int | None = None,
    tissue: Tissue = Tissue.SOFT_TISSUE,
) -> Volume:
    """Tissue map of an unlabelled ultrasound image: soft tissue under a skin layer at the face.

    Image rows (array axis 1, ``j``) run down from the transducer face, as B-mode images
    are stored. The face lies on the top edge of row ``face_row``; rows above it (a
    header band outside the calibrated region) are air.

    Parameters
    ----------
    us_volume : Volume
        A B-mode frame, a stack of frames or a cine loop (whose first frame's geometry is
        used: the anatomy is taken to be the same in every frame).
    skin_thickness_mm : float
        Skin thickness at the face, mm; rows whose centres lie within it are skin (at
        least one row).
    face_row : int, optional
        Row of the transducer face; by default the top of the calibrated ultrasound
        region (``metadata["ultrasound_region"]["y0"]`` from the DICOM reader), else 0.
    tissue : Tissue
        Class below the skin (soft tissue by default).

    Returns
    -------
    Volume
        ``uint8`` labels on the image's grid (one frame for a cine loop), modality ``"SEG"``.

    Raises
    ------
    InputError
        When ``face_row`` is outside the image or the thickness is not positive.
    """
    source = str(us_volume.metadata.get("source", "ultrasound image"))
    geometry = us_volume.frame(0) if us_volume.is_cine else us_volume
    nk, nj, ni = geometry.array.shape
    if face_row is None:
        region = us_volume.metadata.get("ultrasound_region") or {}
        face_row = int(region.get("y0", 0) or 0)
    if not 0 <= int(face_row) < nj:
        raise InputError(f"{source}: face_row {face_row} is outside the image's {nj} rows")
    if not np.isfinite(skin_thickness_mm) or skin_thickness_mm <= 0:
        raise InputError(f"{source}: skin_thickness_mm must be > 0 mm, got {skin_thickness_mm!r}")
    face_row = int(face_row)
    row_mm = float(geometry.spacing[1])
    depth_of_row_centre = (np.arange(nj) - face_row + 0.5) * row_mm
    skin_rows = (depth_of_row_centre >= 0) & (depth_of_row_centre <= skin_thickness_mm)
    skin_rows[face_row] = True

    labels = np.full((nk, nj, ni), int(tissue), dtype=np.uint8)
    labels[:, :face_row, :] = Tissue.AIR
    labels[:, skin_rows, :] = Tissue.SKIN
    return Volume(
        labels,
        geometry.affine.copy(),
        modality="SEG",
        units="label",
        metadata={
            "source": f"tissue_for_ultrasound({source})",
            "derived_from": "ultrasound",
            "face_row": face_row,
        },
    )


def body_mask_from_tissue(labels: Volume) -> np.ndarray:
    """True where a tissue map is inside the body (any class but :attr:`Tissue.AIR`), ``(nk, nj, ni)``."""
    return np.asarray(labels.array) != Tissue.AIR
