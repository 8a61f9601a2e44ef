"""Data files other tools read: isotherm surfaces, temperature and isotherm maps, metrics.

- Isotherm surfaces as STL (binary) and VTP, vertices in world LPS millimetres. Both say
  so the way 3D Slicer reads it: ``SPACE=LPS`` in the STL header, a ``SPACE`` string
  array (``"LPS"``) in the VTP's field data; the VTP also holds ``level_c`` and ``time_s``.
- The lowest temperature each place reached (degC, float32) and one label map per isotherm
  (uint8, 1 where the tissue got colder than the level) as NIfTI on the source image's
  voxels: the same affine, so 3D Slicer and ITK-SNAP overlay them on the CT. A plan without
  an image gets them on the solver's grid (a uniform lattice; its own affine).
- Metrics as CSV, one fact per row.

World LPS millimetres, seconds, degrees Celsius.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from planner.errors import InputError

SPACE_TAG = "SPACE"
SPACE_VALUE = "LPS"


def level_tag(level_c: float) -> str:
    """File-name form of an isotherm level: ``0C``, ``-20C``, ``-12.5C``."""
    return f"{float(level_c):g}C"


def time_tag(time_s: float) -> str:
    """File-name form of a time that sorts in order: ``0360.0s``."""
    return f"{float(time_s):06.1f}s"


def _polydata(verts: np.ndarray, faces: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(verts, dtype=np.float64), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces, dtype=np.int64).ravel(), deep=True))
    mesh = vtkPolyData()
    mesh.SetPoints(points)
    mesh.SetPolys(cells)
    return mesh


def _check_written(ok: int, path: Path) -> None:
    if not ok or not path.is_file():
        raise InputError(f"{path}: cannot write the file")


def write_surface_stl(verts: np.ndarray, faces: np.ndarray, path, *, description: str = "") -> Path:
    """Binary STL of a triangle mesh (``verts`` (n, 3) world LPS mm, ``faces`` (m, 3) indices);
    the 80-byte header says ``SPACE=LPS`` and ``description``."""
    from vtkmodules.vtkIOGeometry import vtkSTLWriter

    path = Path(path)
    writer = vtkSTLWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(_polydata(verts, faces))
    writer.SetFileTypeToBinary()
    header = f"cryoplan {description} {SPACE_TAG}={SPACE_VALUE} mm".replace("  ", " ")
    writer.SetHeader(header[:79])
    _check_written(writer.Write(), path)
    return path


def write_surface_vtp(verts: np.ndarray, faces: np.ndarray, path, *, fields: dict | None = None) -> Path:
    """VTK XML PolyData of a triangle mesh in world LPS mm, with a field-data string array
    ``SPACE`` = ``"LPS"`` and one numeric field-data array per ``fields`` item."""
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    path = Path(path)
    mesh = _polydata(verts, faces)
    space = vtkStringArray()
    space.SetName(SPACE_TAG)
    space.InsertNextValue(SPACE_VALUE)
    mesh.GetFieldData().AddArray(space)
    for name, value in (fields or {}).items():
        array = vtkDoubleArray()
        array.SetName(name)
        array.InsertNextValue(float(value))
        mesh.GetFieldData().AddArray(array)
    writer = vtkXMLPolyDataWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(mesh)
    writer.SetDataModeToAppended()
    writer.SetCompressorTypeToZLib()
    _check_written(writer.Write(), path)
    return path


def write_isotherm_surfaces(result, levels_c, snapshots: dict, folder) -> tuple[list[dict], list[str]]:
    """STL and VTP of every isotherm at every chosen snapshot.

    Parameters
    ----------
    result : ThermalResult
    levels_c : sequence of float
        Isotherm levels, degC.
    snapshots : dict of float -> int
        Time (s) -> snapshot index.
    folder : Path
        Where to write ``isotherm_<level>_<time>.stl`` / ``.vtp``.

    Returns
    -------
    (files, notes) : (list of dict, list of str)
        ``files``: ``{"path", "kind", "format", "level_c", "time_s"}`` per file (path
        relative to ``folder``); ``notes``: the surfaces left out because nothing was that
        cold.
    """
    folder = Path(folder)
    files, notes = [], []
    for time_s, index in snapshots.items():
        for level in levels_c:
            verts, faces = result.isotherm_mesh(float(level), index)
            if len(faces) == 0:
                notes.append(f"no {level:g} degC surface at {time_s:g} s (nothing that cold): no file written")
                continue
            stem = f"isotherm_{level_tag(level)}_{time_tag(time_s)}"
            write_surface_stl(verts, faces, folder / f"{stem}.stl",
                              description=f"isotherm {level:g} degC at {time_s:g} s")
            write_surface_vtp(verts, faces, folder / f"{stem}.vtp", fields={"level_c": level, "time_s": time_s})
            for suffix in ("stl", "vtp"):
                files.append({"path": f"{stem}.{suffix}", "kind": "surface", "format": suffix,
                              "level_c": float(level), "time_s": float(time_s)})
    return files, notes


def write_temperature_maps(run, levels_c, folder) -> tuple[list[dict], list[str]]:
    """The lowest temperature reached and a label map per isotherm, as NIfTI.

    On the source image's voxels (same affine) when the plan has one; otherwise on the
    solver's grid as a uniform lattice. Outside the solver's box the tissue stayed at body
    temperature.

    Returns
    -------
    (files, notes) : (list of dict, list of str)
        ``files``: ``{"path", "kind", "format", "level_c", "geometry"}`` per file (``kind``
        ``"temperature_map"`` or ``"isotherm_label_map"``; ``geometry`` ``"source"`` or
        ``"solver grid"``).
    """
    from planner.imaging.formats import write_volume
    from planner.imaging.memory import check_fits_in_memory
    from planner.simulation import resample_to_volume
    from planner.volume import Volume

    folder = Path(folder)
    result = run.result
    source = run.source_volume
    notes = []
    if source is not None and not source.is_cine:
        # The resampled map plus one uint8 mask at a time.
        check_fits_in_memory(source.array.shape, np.float32, "minimum-temperature map", copies=1.5)
        coldest = resample_to_volume(result, result.min_temperature, source)
        geometry = "source"
    else:
        coldest = result.min_temperature_volume()
        geometry = "solver grid"
        notes.append("the plan has no image: temperature and isotherm maps are on the solver's grid")
    coldest.metadata["quantity"] = "minimum temperature"
    files = []
    name = "min_temperature.nii.gz"
    write_volume(Volume(np.asarray(coldest.array, dtype=np.float32), coldest.affine, modality="OT", units="degC"),
                 folder / name)
    files.append({"path": name, "kind": "temperature_map", "format": "nifti", "geometry": geometry})
    for level in levels_c:
        mask = (np.asarray(coldest.array) < float(level)).astype(np.uint8)
        name = f"isotherm_{level_tag(level)}_labels.nii.gz"
        write_volume(Volume(mask, coldest.affine, modality="SEG", units="label"), folder / name)
        files.append({"path": name, "kind": "isotherm_label_map", "format": "nifti", "level_c": float(level),
                      "geometry": geometry})
    return files, notes


# ---------------------------------------------------------------- metrics
CSV_COLUMNS = ("section", "item", "quantity", "value", "unit")


def metric_rows(metrics: dict | None, isotherm_sizes: list[dict]) -> list[tuple]:
    """Rows ``(section, item, quantity, value, unit)`` of a plan's metrics.

    Parameters
    ----------
    metrics : dict or None
        :meth:`planner.metrics.PlanMetrics.to_dict` (None: only the isotherm sizes).
    isotherm_sizes : list of dict
        ``{"time_s", "level_c", "volume_ml", "along_mm", "across_mm", "max_diameter_mm"}``
        per exported time and level.
    """
    rows: list[tuple] = []
    if metrics is not None:
        for nerve in metrics.get("nerves", []):
            item = nerve["name"]
            role = "target" if nerve.get("target") else "spare"
            rows.append(("nerve", item, "role", role, ""))
            rows.append(("nerve", item, "length_judged", nerve.get("length_mm"), "mm"))
            for entry in nerve.get("coverage", []):
                level = f"{float(entry['level_c']):g}C"
                rows.append(("nerve", item, f"covered_below_{level}", entry.get("covered_mm"), "mm"))
                rows.append(("nerve", item, f"fraction_below_{level}", entry.get("fraction"), "1"))
                rows.append(("nerve", item, f"longest_covered_below_{level}", entry.get("longest_mm"), "mm"))
            rows.append(("nerve", item, "coldest", nerve.get("coldest_c"), "degC"))
            if nerve.get("max_time_below_axonotmesis_s") is not None:
                rows.append(("nerve", item, "longest_time_below_-20C", nerve["max_time_below_axonotmesis_s"], "s"))
        approaches = ([metrics["skin"]] if metrics.get("skin") else []) + list(metrics.get("structures", []))
        for item in approaches:
            rows.append((item["kind"], item["name"], "clearance_0C", item.get("clearance_mm"), "mm"))
            rows.append((item["kind"], item["name"], "reached_by_ice", item.get("reached"), ""))
            rows.append((item["kind"], item["name"], "coldest", item.get("coldest_c"), "degC"))
        for volume in metrics.get("isotherm_volumes_ml", []):
            level = f"{float(volume['level_c']):g}"
            rows.append(("ice", f"{level} degC", "volume_coldest_reached", volume.get("volume_ml"), "ml"))
            if "final_volume_ml" in volume:
                rows.append(("ice", f"{level} degC", "volume_at_end", volume.get("final_volume_ml"), "ml"))
        rows.append(("ice", "anywhere", "coldest", metrics.get("min_temperature_c"), "degC"))
    for size in isotherm_sizes:
        item = f"{size['level_c']:g} degC at {size['time_s']:g} s"
        for key, unit in (("volume_ml", "ml"), ("along_mm", "mm"), ("across_mm", "mm"), ("max_diameter_mm", "mm")):
            rows.append(("isotherm", item, key.rsplit("_", 1)[0], size[key], unit))
    if metrics is not None:
        for warning in metrics.get("warnings", []):
            rows.append(("warning", warning.get("structure") or "", warning["code"], warning["message"], ""))
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def csv_text(rows, columns=CSV_COLUMNS) -> str:
    """CSV text (header row, ``\\n`` line ends) of ``rows``; floats to 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return buffer.getvalue()


def isotherm_sizes(result, levels_c, snapshots: dict) -> list[dict]:
    """Volume and extents of each isotherm at each chosen snapshot (time s -> index)."""
    sizes = []
    for time_s, index in snapshots.items():
        for level in levels_c:
            extent = result.isotherm_extent_mm(float(level), index)
            sizes.append({
                "time_s": float(time_s),
                "level_c": float(level),
                "volume_ml": round(float(result.isotherm_volume_ml(float(level), index)), 4),
                "along_mm": round(float(extent["along"]), 2),
                "across_mm": round(float(extent["across"]), 2),
                "max_diameter_mm": round(float(extent["max_diameter"]), 2),
            })
    return sizes
