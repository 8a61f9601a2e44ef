"""Batch export (planner.export): options, pictures, data files, reports, manifest, resume,
worker processes and Dask.

The example plans run on a coarse grid (1.5 mm) and small pictures so the whole file
takes a couple of minutes on two cores; "tiny" plans (one probe in muscle, a short
protocol, 2 mm grid) cover resume, determinism, workers and Dask.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from planner.errors import InputError
from planner.export import export_plans, find_plans, parse_size, parse_times, parse_views
from planner.export import data as export_data
from planner.export import manifest as mf
from planner.export import report as export_report
from planner.export import screenshots, svgplot
from planner.export.batch import plan_slugs
from planner.export.settings import resolve_times
from planner.scene import palette
from planner.thermal import preview

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLANS = REPO / "data" / "plans"
CASE_LIBRARY = REPO / "data" / "cases"
EXAMPLE_INPUTS = [folder for folder in (EXAMPLE_PLANS, CASE_LIBRARY) if folder.is_dir()]
EXAMPLE_SPACING_MM = 1.5
EXAMPLE_SIZE = (640, 480)
EXAMPLE_TIMES = "30,end"  # 30 s is no plan's snapshot: every plan re-runs with it
TINY_SPACING_MM = 2.0
TINY_KW = dict(views="3d,axial,probe", times="end", size="320x240", spacing_mm=TINY_SPACING_MM)


def tiny_plan(path: Path, *, name: str = "tiny", freeze_s: float = 40.0, x_mm: float = 0.0, nerve: bool = True) -> Path:
    """A one-probe plan in homogeneous muscle: a 16 G N2O probe along z at ``x_mm``."""
    plan = {
        "format": "cryoplan.plan",
        "schema_version": 1,
        "name": name,
        "volume": None,
        "tissue": {"source": "homogeneous", "class": "muscle", "overrides": {}},
        "probes": [{"name": "A", "model": "n2o-16g", "tip": [x_mm, 0.0, 0.0], "entry": [x_mm, 0.0, 30.0]}],
        "protocol": [{"kind": "freeze", "duration_s": freeze_s}],
        "nerves": [{"name": "n", "points": [[x_mm - 15, 3.0, 2.0], [x_mm + 15, 3.0, 2.0]], "radius_mm": 0.8,
                    "target": True}] if nerve else [],
        "isotherms_c": [0.0, -20.0, -40.0],
        "snapshot_times_s": None,
        "grid": None,
    }
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


# ============================================================================ options
def test_parse_views_times_size():
    assert parse_views("3d, Axial,probe,3d") == ("3d", "axial", "probe")
    assert parse_views(["coronal"]) == ("coronal",)
    assert parse_times("end") == ("end",)
    assert parse_times("120, 300,end,120") == (120.0, 300.0, "end")
    assert parse_times([60, "all"]) == (60.0, "all")
    assert parse_size("1600x1200") == (1600, 1200)
    assert parse_size((320, 240)) == (320, 240)


@pytest.mark.parametrize(
    ("parser", "value", "words"),
    [
        (parse_views, "3d,ct", "unknown view 'ct'"),
        (parse_views, "3d,,axial", "empty item"),
        (parse_times, "-5", ">= 0"),
        (parse_times, "soon", "expected seconds"),
        (parse_times, "nan", ">= 0"),
        (parse_size, "1600", "WIDTHxHEIGHT"),
        (parse_size, "10x10", "width must be 64 to 8192"),
        (parse_size, "800x600.5", "whole pixels"),
    ],
)
def test_bad_options_raise_one_line_input_errors(parser, value, words):
    with pytest.raises(InputError) as error:
        parser(value)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_resolve_times():
    assert resolve_times(("end",), (150, 210, 360), 360.0) == (360.0,)
    assert resolve_times(("all", 100.0), (150, 360), 360.0) == (100.0, 150.0, 360.0)
    with pytest.raises(InputError, match="after the end of its protocol"):
        resolve_times((400.0,), (360,), 360.0, source="p.json")


def test_find_plans_and_slugs(tmp_path):
    folder = tmp_path / "plans"
    folder.mkdir()
    a = tiny_plan(folder / "b plan.json")
    tiny_plan(folder / "a.json")
    (folder / "notes.txt").write_text("not a plan")
    out = folder / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    found = find_plans([folder, a], out_dir=out)
    assert [p.name for p in found] == ["a.json", "b plan.json"]  # sorted, repeat dropped, out_dir left out
    assert plan_slugs([Path("x/p.json"), Path("y/p.json"), Path("z/b plan.json")]) == ["p", "p-2", "b_plan"]
    with pytest.raises(InputError, match="no such plan file or folder"):
        find_plans([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no plan files"):
        find_plans([empty])


def test_export_plans_refuses_bad_arguments(tmp_path):
    plan = tiny_plan(tmp_path / "p.json")
    with pytest.raises(InputError, match="--workers"):
        export_plans([plan], tmp_path / "out", workers=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_plans([plan], tmp_path / "file")
    with pytest.raises(InputError, match="--spacing"):
        export_plans([plan], tmp_path / "out", spacing_mm=-1.0)


def test_import_is_headless():
    code = ("import sys, planner.export; "
            "bad = [m for m in ('pyvista', 'vtkmodules', 'trame', 'web', 'numba') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


# ============================================================================ small parts
def test_nice_ticks_cover_the_range_with_round_steps():
    for low, high in ((0, 1500), (0, 0.37), (-3.2, 17.9), (5, 5)):
        ticks = svgplot.nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= max(high, low)
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0])
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
        assert 2 <= len(ticks) <= 9


def test_growth_plot_is_valid_svg_with_one_line_per_level():
    history = {"time": np.linspace(1, 100, 2000), "volume_ml": {0.0: np.linspace(0, 3, 2000),
                                                                -20.0: np.linspace(0, 1, 2000)}}
    steps = [{"kind": "freeze", "duration_s": 60.0}, {"kind": "passive_thaw", "duration_s": 40.0}]
    svg = export_report.growth_plot_svg(history, (0.0, -20.0, -40.0), steps)
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2  # -40 degC has no history: no line
    assert [line.get("stroke") for line in lines] == [palette.to_hex(palette.isotherm_color(v)) for v in (0.0, -20.0)]
    # Thinned to a few hundred points; starts at t = 0 with no ice.
    points = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert 100 < len(points) <= 602
    assert "freeze 1" in svg and "passive thaw 1" in svg
    # The largest volume is drawn highest (smallest y); zero volume lowest.
    ys = [p[1] for p in points]
    assert ys.index(min(ys)) == len(ys) - 1 and ys[0] == max(ys)


def test_scale_bar_and_phase_names():
    assert screenshots.scale_bar_mm(0.1, 800) == 10.0  # 20% of 80 mm
    assert screenshots.scale_bar_mm(0.02, 1600) == 5.0
    assert screenshots.scale_bar_mm(1e-4, 100) == 0.5  # never less than the smallest step

    class Step:
        def __init__(self, kind, duration_s):
            self.kind, self.duration_s = kind, duration_s

    protocol = [Step("freeze", 150), Step("passive_thaw", 60), Step("freeze", 150)]
    assert screenshots.phase_at(protocol, 150) == "end of freeze 1"
    assert screenshots.phase_at(protocol, 180) == "passive thaw 1, 30 s in"
    assert screenshots.phase_at(protocol, 360) == "end of freeze 2"
    assert screenshots.phase_at(protocol, 0) == "start"


def test_fit_plane_shows_the_box_centred():
    box = np.array([[-10.0, -5.0, 0.0], [30.0, 5.0, 20.0]])
    plane = screenshots.fit_plane("coronal", (1, 0, 0), (0, 0, -1), (0.0, 2.0, 0.0), box, (300, 400))
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]])
    rows, cols, _ = plane.world_to_pixel(corners)
    assert rows.min() >= -1e-6 and rows.max() <= 299 + 1e-6
    assert cols.min() >= -1e-6 and cols.max() <= 399 + 1e-6
    # The box's centre projects to the picture's centre; the plane passes through y = 2.
    r, c, distance = plane.world_to_pixel(np.array([10.0, 2.0, 10.0]))
    assert np.isclose(r, 149.5) and np.isclose(c, 199.5) and np.isclose(distance, 0.0)
    # world_to_pixel of its geometry record agrees with the plane (header added to rows).
    geometry = screenshots.plane_geometry(plane) | {"header_px": 17}
    rr, cc = screenshots.world_to_pixel(geometry, corners)
    assert np.allclose(rr, rows + 17) and np.allclose(cc, cols)


def test_compose_draws_header_legend_and_scale_bar():
    picture = np.full((200, 300, 3), 40, dtype=np.uint8)
    legend = palette.legend_entries((0.0, -20.0))
    out = screenshots.compose(picture, title="A plan", subtitle="axial", mm_per_px=0.1, legend=legend, header_px=40)
    assert out.shape == (240, 300, 3)
    assert np.array_equal(out[120:130, 100:110], picture[80:90, 100:110])  # the picture itself is untouched there
    blue = np.array(palette.to_rgb255(palette.isotherm_color(-20.0)))
    lower_right = out[140:, 150:]
    assert np.any(np.all(lower_right == blue, axis=-1)), "legend swatch of -20 degC"
    assert not np.any(np.all(out[:, :150] == blue, axis=-1))
    assert np.any(np.all(out[200:, :150] == 255, axis=-1)), "white scale bar, lower left"
    orange = np.array([255, 190, 120])
    assert np.any(np.abs(out[:40].astype(int) - orange).max(axis=-1) < 30), "the not-for-clinical-use line"


def test_surface_files_say_lps(tmp_path):
    import pyvista as pv
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    verts = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 30.0]])
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    stl = export_data.write_surface_stl(verts, faces, tmp_path / "s.stl", description="test")
    vtp = export_data.write_surface_vtp(verts, faces, tmp_path / "s.vtp", fields={"level_c": -20.0})
    assert b"SPACE=LPS" in stl.read_bytes()[:80]
    mesh = pv.read(stl)
    assert mesh.n_cells == 4 and np.allclose(mesh.bounds, (0, 10, 0, 20, 0, 30))
    reader = vtkXMLPolyDataReader()
    reader.SetFileName(str(vtp))
    reader.Update()
    output = reader.GetOutput()
    assert output.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    assert output.GetFieldData().GetArray("level_c").GetValue(0) == -20.0
    assert output.GetNumberOfCells() == 4


def test_metric_rows_and_csv():
    metrics = {
        "nerves": [{"name": "n", "target": True, "length_mm": 20.0, "coldest_c": -30.0,
                    "coverage": [{"level_c": -20.0, "covered_mm": 5.0, "fraction": 0.25, "longest_mm": 4.0}],
                    "max_time_below_axonotmesis_s": 12.0}],
        "skin": {"name": "skin", "kind": "skin", "clearance_mm": 4.5, "reached": False, "coldest_c": 30.0},
        "structures": [],
        "isotherm_volumes_ml": [{"level_c": 0.0, "volume_ml": 1.25, "final_volume_ml": 1.0}],
        "min_temperature_c": -80.0,
        "warnings": [{"code": "skin_near_ice", "structure": "skin", "message": "close, 4.5 mm", "distance_mm": 4.5}],
    }
    sizes = [{"time_s": 60.0, "level_c": 0.0, "volume_ml": 1.0, "along_mm": 10.0, "across_mm": 8.0,
              "max_diameter_mm": 11.0}]
    text = export_data.csv_text(export_data.metric_rows(metrics, sizes))
    rows = list(csv.DictReader(text.splitlines()))
    table = {(r["section"], r["item"], r["quantity"]): r for r in rows}
    assert table[("nerve", "n", "covered_below_-20C")]["value"] == "5"
    assert table[("nerve", "n", "fraction_below_-20C")]["unit"] == "1"
    assert table[("skin", "skin", "clearance_0C")]["value"] == "4.5"
    assert table[("ice", "0 degC", "volume_coldest_reached")]["value"] == "1.25"
    assert table[("isotherm", "0 degC at 60 s", "max_diameter")]["value"] == "11"
    assert table[("warning", "skin", "skin_near_ice")]["value"] == "close, 4.5 mm"


def test_3d_camera_geometry_maps_world_points_to_their_pixels(tmp_path):
    """Render a tiny plan seen from the side and find the probe's shaft where the camera
    record puts it, with the picture's scale."""
    from planner.simulation import run_plan

    run = run_plan(tiny_plan(tmp_path / "p.json", nerve=False), spacing_mm=TINY_SPACING_MM)
    scene = screenshots.plan_scene(run)
    scene3d = screenshots.Scene3D(scene, (300, 400))
    try:
        geometry = scene3d.look_from((1.0, -0.3, 0.0))  # from the patient's left, the shaft upright
        rgb = scene3d.render(-1)
    finally:
        scene3d.close()
    assert rgb.shape == (300, 400, 3)
    geometry["header_px"] = 0
    brightness = rgb.astype(int).sum(axis=-1)
    background = brightness[:5, :5].mean()
    # Points on the shaft above the ice (z 18-28 mm) show the grey probe; 3 mm beside it, background.
    for z in (18.0, 23.0, 28.0):
        row, col = (int(round(float(v))) for v in screenshots.world_to_pixel(geometry, np.array([0.0, 0.0, z])))
        assert brightness[row, col] > background + 150, z
        side = np.array([0.0, 0.0, z]) + 3.0 * np.asarray(geometry["right"])
        row, col = (int(round(float(v))) for v in screenshots.world_to_pixel(geometry, side))
        assert abs(brightness[row, col] - background) < 10, z
    # The scale: the shaft's 10 mm from z 18 to z 28 spans 10 mm / mm_per_px pixels (up is +z here).
    rows = [screenshots.world_to_pixel(geometry, np.array([0.0, 0.0, z]))[0] for z in (18.0, 28.0)]
    assert np.isclose(rows[0] - rows[1], 10.0 * geometry["up"][2] / geometry["mm_per_px"], rtol=1e-6)


def test_a_time_without_ice_writes_pictures_and_says_why_surfaces_are_missing(tmp_path):
    plan = tiny_plan(tmp_path / "p.json", nerve=False)
    report = export_plans([plan], tmp_path / "out", **(TINY_KW | {"times": "0,end", "views": "axial"}))
    assert report.exit_code == 0
    record = report.outcomes[0].record
    pictures = {f["time_s"]: f for f in record["files"] if f["kind"] == "image"}
    assert set(pictures) == {0.0, 40.0}
    surfaces = {f["time_s"] for f in record["files"] if f["kind"] == "surface"}
    assert surfaces == {40.0}
    assert any("no 0 degC surface at 0 s" in note for note in record["notes"])
    start = read_png(tmp_path / "out" / pictures[0.0]["path"])
    end = read_png(tmp_path / "out" / pictures[40.0]["path"])
    # Around the probe (the legend repeats the colour in its corner): no -20 degC line at 0 s.
    geometry = pictures[0.0]["geometry"]
    row, col = screenshots.world_to_pixel(geometry, np.array([0.0, 0.0, 3.0]))
    rr, cc = np.ogrid[: start.shape[0], : start.shape[1]]
    near = (rr - row) ** 2 + (cc - col) ** 2 < (10.0 / geometry["mm_per_px"]) ** 2
    blue = np.array(palette.to_rgb255(palette.isotherm_color(-20.0)))
    assert not np.all(start == blue, axis=-1)[near].any()
    assert np.all(end == blue, axis=-1)[near].any()


# ============================================================================ the example plans
def _example_plan_files() -> list[Path]:
    return [path for folder in EXAMPLE_INPUTS for path in sorted(folder.glob("*.json"))]


def _missing_image(path: Path) -> list[str]:
    """Why a plan's image file cannot be used here (a case on an image that is not installed)."""
    from planner.plan import file_problems, load_plan

    return file_problems(load_plan(path, check_files=False), path)


def _once(tmp_path_factory, name: str, make) -> Path:
    """A folder filled by ``make(folder)`` once per test session, shared by pytest-xdist
    workers (the first one makes it while the others wait on a lock file)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done, lock = root / name, root / f"{name}.done", root / f"{name}.lock"
    deadline = time.monotonic() + 1800
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if done.exists():
                return folder
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited too long for {lock}") from None
            time.sleep(0.5)
    try:
        if not done.exists():
            make(folder)
            done.touch()
    finally:
        os.close(handle)
        os.unlink(lock)
    return folder


@pytest.fixture(scope="module")
def example_export(tmp_path_factory):
    """The example plans and the case library, exported on a coarse grid at two times:
    ``(out, ExportReport.to_dict())`` (made once per session, also under pytest-xdist)."""

    def make(folder: Path) -> None:
        report = export_plans(EXAMPLE_INPUTS, folder / "out", views="3d,axial,coronal,sagittal,probe",
                              times=EXAMPLE_TIMES, size=f"{EXAMPLE_SIZE[0]}x{EXAMPLE_SIZE[1]}",
                              spacing_mm=EXAMPLE_SPACING_MM)
        (folder / "report.json").write_text(json.dumps(report.to_dict()), encoding="utf-8")

    folder = _once(tmp_path_factory, "example_export", make)
    return folder / "out", json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _ok_plans(report: dict) -> dict:
    return {p["slug"]: Path(p["plan_path"]) for p in report["plans"] if p["status"] == "ok"}


@pytest.fixture(scope="module")
def exported_plans(example_export):
    """``{slug: (plan, placed probes)}`` of the example plans the export finished."""
    _, report = example_export
    return _plans_and_probes(_ok_plans(report))


def _encloses(surface, point) -> bool:
    """True when the closed ``surface`` (PolyData) holds ``point``."""
    import pyvista as pv
    from vtkmodules.vtkFiltersModeling import vtkSelectEnclosedPoints

    select = vtkSelectEnclosedPoints()
    select.SetSurfaceData(surface)
    select.SetInputData(pv.PolyData(np.asarray(point, dtype=float)[None]))
    select.Update()
    return bool(select.IsInside(0))


def _bluish(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the shaded -20 degC (blue) and -40 degC (magenta) shells, seen through the
    translucent skin and 0 degC shell: blue strongest and well above a darkish red, or red
    and blue both well above green. Skin, bone, nerve, vessels, the grey probe, the
    background, the light lung and the whitish 0 degC shell are neither."""
    red, green, blue = (rgb[..., k].astype(int) for k in range(3))
    blue_shell = (blue - red > 30) & (blue >= np.maximum(red, green)) & (red < 150)
    magenta_shell = (red > 80) & (blue > 80) & (green < 0.6 * np.minimum(red, blue))
    return blue_shell | magenta_shell


def _distance_to_segment(rows, cols, start, end) -> np.ndarray:
    """Pixel distance of every (row, col) to the 2D segment ``start``-``end`` (row, col)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    step = end - start
    length2 = max(float(step @ step), 1e-12)
    t = np.clip(((rows - start[0]) * step[0] + (cols - start[1]) * step[1]) / length2, 0.0, 1.0)
    return np.hypot(rows - (start[0] + t * step[0]), cols - (start[1] + t * step[1]))


def _plans_and_probes(paths: dict) -> dict:
    from planner.plan import load_plan, placed_probes

    plans = {slug: load_plan(path, check_files=False) for slug, path in paths.items()}
    return {slug: (plan, placed_probes(plan)) for slug, plan in plans.items()}


def test_example_export_writes_every_expected_file(example_export):
    out, report = example_export
    files_in = _example_plan_files()
    assert len(report["plans"]) == len(files_in) >= 3
    unavailable = {path.name for path in files_in if _missing_image(path)}
    for outcome in report["plans"]:
        if Path(outcome["plan_path"]).name in unavailable:  # a case on an image that is not installed
            assert outcome["status"] == "failed" and "volume" in outcome["message"], outcome["message"]
        else:
            assert outcome["status"] == "ok", outcome["message"]
    assert report["exit_code"] == (1 if unavailable else 0)
    names = sorted(_ok_plans(report))
    assert len(names) >= 3
    manifest = manifest_of(out)
    assert manifest["disclaimer"].endswith("Not for clinical use.")
    files = manifest["files"]
    # Every listed file exists with its checksum.
    for entry in files:
        path = out / entry["path"]
        assert path.is_file(), entry["path"]
        assert mf.sha256_file(path) == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
    for slug in names:
        record = json.loads((out / slug / "export.json").read_text())
        total = record["plan"]["params"]["protocol"]
        end = sum(step["duration_s"] for step in total)
        times = {30.0, end}
        images = {(f["view"], f["time_s"]) for f in files if f["plan"] == slug and f["kind"] == "image"}
        assert images == {(v, t) for v in ("3d", "axial", "coronal", "sagittal", "probe") for t in times}
        kinds = [f["kind"] for f in files if f["plan"] == slug]
        assert kinds.count("surface") == 2 * 3 * len(times)  # STL and VTP per level and time
        assert kinds.count("isotherm_label_map") == 3 and kinds.count("temperature_map") == 1
        for kind in ("report", "growth_plot"):
            assert kinds.count(kind) == 1
        assert {f["format"] for f in files if f["plan"] == slug and f["kind"] == "metrics"} == {"csv", "json"}
    assert {f["path"] for f in files if f["plan"] is None} == {"index.html", "comparison.csv"}
    rows = list(csv.DictReader((out / "comparison.csv").read_text().splitlines()))
    assert [r["status"] for r in rows] == [o["status"] for o in report["plans"]]


def test_example_pictures_show_the_ice_at_the_probe(example_export, exported_plans):
    out, _ = example_export
    manifest = manifest_of(out)
    plans = exported_plans
    iso = {level: np.array(palette.to_rgb255(palette.isotherm_color(level))) for level in (-20.0, -40.0)}
    bluish_pixels = {}
    for entry in manifest["files"]:
        if entry["kind"] != "image":
            continue
        rgb = read_png(out / entry["path"])
        assert rgb.shape == (EXAMPLE_SIZE[1], EXAMPLE_SIZE[0], 3)
        sizes_now = {s["level_c"]: s for s in json.loads((out / entry["plan"] / "export.json").read_text())[
            "isotherm_sizes"] if s["time_s"] == entry["time_s"]}
        assert rgb.std() > 10, f"{entry['path']} looks blank"
        plan, probes = plans[entry["plan"]]
        record = json.loads((out / entry["plan"] / "export.json").read_text())
        size = next(s for s in record["isotherm_sizes"] if s["time_s"] == entry["time_s"] and s["level_c"] == 0.0)
        geometry = entry["geometry"]
        scale = geometry["mm_per_px"]
        centre = np.mean(probes[0].active_segment(), axis=0)
        row, col = screenshots.world_to_pixel(geometry, centre)
        radius = max(0.6 * size["max_diameter_mm"] / scale, 6)
        rr, cc = np.ogrid[: rgb.shape[0], : rgb.shape[1]]
        near = (rr - row) ** 2 + (cc - col) ** 2 <= radius**2
        assert near.sum() > 50, f"{entry['path']}: probe projects outside the picture"
        header = geometry["header_px"]
        far = np.zeros(rgb.shape[:2], dtype=bool)
        far[header + 5 : header + 40, -60:-5] = True  # top right of the picture, away from the ice
        far &= (rr - row) ** 2 + (cc - col) ** 2 > (1.5 * radius) ** 2
        if entry["view"] == "3d":
            # Shaded surfaces: the -20 (blue) and -40 (magenta) shells. Look at a band around the
            # projected active segment, outside the probe itself (its cyan would pass for ice) and
            # inside the -20 degC radius at that time.
            ends = np.stack(screenshots.world_to_pixel(geometry, np.array(probes[0].active_segment())), axis=-1)
            distance_mm = _distance_to_segment(rr, cc, ends[0], ends[1]) * scale
            inner = probes[0].radius_mm + 0.5
            outer = min(probes[0].radius_mm + 3.0, 0.8 * sizes_now[-20.0]["across_mm"] / 2)
            band = (distance_mm > inner) & (distance_mm < outer)
            bluish = _bluish(rgb)
            elsewhere = distance_mm > max(sizes_now[0.0]["max_diameter_mm"], 5.0)  # beyond all the ice
            if outer - inner > 0.5 and band.sum() > 30:
                # Bone, vessels or the nerve may hide part of the ice: ask for a clear share of ice
                # colours there, many times their share away from the ice.
                share = bluish[band].mean()
                assert share > 0.1 and share > 5 * bluish[elsewhere].mean(), \
                    f"{entry['path']}: no ice colours around the probe ({share:.2f})"
            assert not bluish[far].any()
            bluish_pixels[(entry["plan"], entry["time_s"])] = int(bluish.sum())
        else:
            sizes = {s["level_c"]: s for s in record["isotherm_sizes"] if s["time_s"] == entry["time_s"]}
            for level, color in iso.items():
                if sizes[level]["across_mm"] < 4 * scale:
                    continue  # too small to draw a line around the probe at this scale
                match = np.all(rgb == color, axis=-1)
                assert match[near].any(), f"{entry['path']}: no {level:g} degC contour near the probe"
                assert not match[far].any()
    # The 3D view shows each time's ice: more ice, more of its colours.
    for slug in plans:
        record = json.loads((out / slug / "export.json").read_text())
        volume = {s["time_s"]: s["volume_ml"] for s in record["isotherm_sizes"] if s["level_c"] == -20.0}
        early, late = 30.0, max(volume)
        if volume[late] > 1.3 * volume[early]:
            assert bluish_pixels[(slug, late)] > bluish_pixels[(slug, early)], slug


def _source_image(plan, plan_path):
    """The image a plan runs on (the demo CT, or its image file), or None."""
    from planner.plan import DemoVolume, resolve_plan_path

    if plan.volume is None:
        return None
    if isinstance(plan.volume, DemoVolume):
        from planner.demo import build_demo_case

        return build_demo_case(plan.volume.demo).ct
    from planner.imaging import read_volume

    return read_volume(resolve_plan_path(plan_path, plan.volume.path), series_uid=plan.volume.series_uid)


def test_example_nifti_maps_share_the_source_geometry(example_export, exported_plans):
    from planner.imaging import read_volume

    out, report = example_export
    paths = _ok_plans(report)
    on_images = 0
    for slug, (plan, probes) in exported_plans.items():
        folder = out / slug / "data"
        coldest = read_volume(folder / "min_temperature.nii.gz")
        source = _source_image(plan, paths[slug])
        if source is not None:  # the same voxels and affine as the image (float32 in NIfTI-1)
            on_images += 1
            assert coldest.array.shape == source.array.shape, slug
            assert np.allclose(coldest.affine, source.affine, atol=1e-4 * np.abs(source.affine).max()), slug
            corner = np.unravel_index(0, coldest.array.shape)
            assert np.isclose(coldest.array[corner], 37.0)  # far from the solver's box: body temperature
        centre = np.mean(probes[0].active_segment(), axis=0)
        assert float(coldest.sample(centre[None])[0]) < -20.0, slug  # the probe's own cold
        masks = {}
        for level in (0.0, -20.0, -40.0):
            labels = read_volume(folder / f"isotherm_{level:g}C_labels.nii.gz")
            assert np.array_equal(labels.affine, coldest.affine) and labels.array.shape == coldest.array.shape
            assert set(np.unique(labels.array)) <= {0, 1}
            assert np.array_equal(labels.array.astype(bool), coldest.array < level)
            masks[level] = labels.array.astype(bool)
        assert masks[0.0].sum() > masks[-20.0].sum() > masks[-40.0].sum() > 0, slug
        assert not np.any(masks[-40.0] & ~masks[-20.0])
    assert on_images >= 1


def test_example_export_overlays_the_real_head_ct(example_export, exported_plans):
    """A case on the installed head CT (InVesalius example) exports maps on the CT's own voxels."""
    from realdata import invesalius_ct_path

    from planner.imaging import read_volume
    from planner.plan import VolumeFile, resolve_plan_path

    ct_path = invesalius_ct_path().resolve()
    out, report = example_export
    paths = _ok_plans(report)
    on_ct = [slug for slug, (plan, _) in exported_plans.items()
             if isinstance(plan.volume, VolumeFile) and resolve_plan_path(paths[slug], plan.volume.path).resolve()
             == ct_path]
    if not on_ct:
        pytest.skip("no example plan or case uses the head CT")
    ct = read_volume(ct_path)
    for slug in on_ct:
        for name in ("min_temperature.nii.gz", "isotherm_0C_labels.nii.gz"):
            overlay = read_volume(out / slug / "data" / name)
            assert overlay.array.shape == ct.array.shape
            assert np.allclose(overlay.affine, ct.affine, atol=1e-4 * np.abs(ct.affine).max()), (slug, name)


def test_example_surfaces_enclose_the_probe(example_export, exported_plans):
    import pyvista as pv

    out, _ = example_export
    for slug, (plan, probes) in exported_plans.items():
        end = plan.total_duration_s
        centre = np.mean(probes[0].active_segment(), axis=0)
        for level in (0.0, -20.0):
            stem = out / slug / "data" / f"isotherm_{level:g}C_{export_data.time_tag(end)}"
            stl, vtp = pv.read(f"{stem}.stl"), pv.read(f"{stem}.vtp")
            assert stl.n_cells == vtp.n_cells > 0
            low, high = np.array(vtp.bounds[::2]), np.array(vtp.bounds[1::2])
            assert np.all(low < centre) and np.all(centre < high), f"{slug} {level}"
            assert _encloses(vtp.clean(), centre), f"{slug} {level}"


def test_example_metrics_csv_and_report_agree(example_export, exported_plans):
    out, _ = example_export
    record = json.loads((out / "intercostal_demo" / "export.json").read_text())
    rows = list(csv.DictReader((out / "intercostal_demo" / "metrics.csv").read_text().splitlines()))
    volume = next(r for r in rows if r["section"] == "isotherm" and r["item"] == "-20 degC at 360 s"
                  and r["quantity"] == "volume")
    size = next(s for s in record["isotherm_sizes"] if s["time_s"] == 360.0 and s["level_c"] == -20.0)
    assert np.isclose(float(volume["value"]), size["volume_ml"], rtol=1e-5)
    assert any(r["section"] == "nerve" and r["item"] == "intercostal_nerve_T7" for r in rows)
    html = (out / "intercostal_demo" / "report.html").read_text()
    assert "Not for clinical use." in html and "<svg" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    for warning in record["metrics"]["warnings"]:
        assert warning["message"].replace("'", "&#x27;") in html
    index = (out / "index.html").read_text()
    for slug in exported_plans:
        assert f'href="{slug}/report.html"' in index


# ============================================================================ resume, failures
def _mtimes(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent != out}


def test_bad_plan_is_skipped_and_second_run_skips_finished_work(tmp_path, monkeypatch):
    plans = tmp_path / "plans"
    plans.mkdir()
    good = tiny_plan(plans / "good.json")
    (plans / "broken.json").write_text('{"format": "cryoplan.plan", "schema_version": 1, "name": ')
    out = tmp_path / "out"
    seen = []
    first = export_plans([plans], out, progress=lambda outcome, done, total: seen.append((outcome.slug, done, total)),
                         **TINY_KW)
    assert first.exit_code == 1
    assert [o.status for o in first.outcomes] == ["failed", "ok"]  # broken.json sorts first; good still ran
    assert "broken.json" in first.failed[0].message and "JSON" in first.failed[0].message
    assert seen == [("broken", 1, 2), ("good", 2, 2)]
    assert any("FAILED" in line and "broken" in line for line in first.describe())
    manifest = manifest_of(out)
    assert {p["slug"]: p["status"] for p in manifest["plans"]} == {"broken": "failed", "good": "ok"}
    assert all(f["plan"] in ("good", None) for f in manifest["files"])
    index = (out / "index.html").read_text()
    assert "broken.json" in index and "failed" in index
    before = _mtimes(out)

    second = export_plans([plans], out, **TINY_KW)
    assert [o.status for o in second.outcomes] == ["failed", "skipped"]
    assert second.exit_code == 1
    assert _mtimes(out) == before, "a finished plan was rewritten"
    # The plan's files are listed as before (the index now says "up to date").
    plan_files = [f for f in manifest["files"] if f["plan"] is not None]
    assert [f for f in manifest_of(out)["files"] if f["plan"] is not None] == plan_files
    assert "up to date" in (out / "index.html").read_text()

    # A damaged output redoes the plan; so does --force.
    picture = out / "good" / "images" / "axial_0040.0s.png"
    picture.write_bytes(picture.read_bytes()[:100])
    third = export_plans([good], out, **TINY_KW)
    assert third.outcomes[0].status == "ok"
    assert read_png(picture).shape == (240, 320, 3)
    assert export_plans([good], out, force=True, **TINY_KW).outcomes[0].status == "ok"

    # A changed plan is redone, and its outputs for the old end time are removed.
    tiny_plan(good, freeze_s=30.0)
    fourth = export_plans([good], out, **TINY_KW)
    assert fourth.outcomes[0].status == "ok"
    assert (out / "good" / "images" / "axial_0030.0s.png").is_file()
    assert not picture.exists()
    # Other settings are a different export too, and so is another solver.
    assert export_plans([good], out, **(TINY_KW | {"size": "330x240"})).outcomes[0].status == "ok"
    assert export_plans([good], out, **(TINY_KW | {"size": "330x240"})).outcomes[0].status == "skipped"
    monkeypatch.setattr(preview, "solver_fingerprint", lambda: "another solver")
    assert export_plans([good], out, **(TINY_KW | {"size": "330x240"})).outcomes[0].status == "ok"


def test_a_missing_plan_file_is_reported_with_the_others(tmp_path):
    good = tiny_plan(tmp_path / "good.json")
    report = export_plans([tmp_path / "missing.json", good], tmp_path / "out", **(TINY_KW | {"views": "axial"}))
    assert [o.status for o in report.outcomes] == ["failed", "ok"]
    assert report.outcomes[0].message == f"{tmp_path / 'missing.json'}: no such plan file"
    assert report.exit_code == 1
    assert find_plans([tmp_path / "missing.json"], keep_missing=True) == [tmp_path / "missing.json"]


def test_a_time_after_the_protocol_fails_that_plan_only(tmp_path):
    short = tiny_plan(tmp_path / "short.json", freeze_s=20.0)
    long = tiny_plan(tmp_path / "long.json", freeze_s=40.0)
    report = export_plans([short, long], tmp_path / "out", **(TINY_KW | {"times": "30", "views": "axial"}))
    status = {o.slug: o for o in report.outcomes}
    assert status["short"].status == "failed" and "30 s is after the end" in status["short"].message
    assert status["long"].status == "ok"
    assert report.exit_code == 1


# ============================================================================ determinism, workers, Dask
@pytest.fixture(scope="module")
def tiny_plans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return [tiny_plan(folder / "one.json", name="one"), tiny_plan(folder / "two.json", name="two", x_mm=5.0,
                                                                  nerve=False)]


@pytest.fixture(scope="module")
def tiny_reference(tiny_plans, tmp_path_factory):
    """The tiny plans exported in this process: the reference checksums."""
    out = tmp_path_factory.mktemp("reference")
    report = export_plans(tiny_plans, out, **TINY_KW)
    assert report.exit_code == 0
    return out


def _checksums(out: Path) -> dict:
    return {f["path"]: f["sha256"] for f in manifest_of(out)["files"] if f["plan"] is not None}


def test_same_plan_gives_identical_files(tiny_plans, tiny_reference, tmp_path):
    """Measured tolerance: none. Every file (pictures included) is byte-identical between runs."""
    again = export_plans(tiny_plans, tmp_path / "again", **TINY_KW)
    assert again.exit_code == 0
    reference, repeat = _checksums(tiny_reference), _checksums(tmp_path / "again")
    assert reference.keys() == repeat.keys() and len(reference) > 20
    for path in reference:
        if path.endswith(".png"):
            a = read_png(tiny_reference / path).astype(int)
            b = read_png(tmp_path / "again" / path).astype(int)
            assert np.abs(a - b).max() == 0, path
        assert reference[path] == repeat[path], path


def test_worker_processes_give_the_same_files(tiny_plans, tiny_reference, tmp_path):
    report = export_plans(tiny_plans, tmp_path / "workers", workers=2, **TINY_KW)
    assert [o.status for o in report.outcomes] == ["ok", "ok"]
    assert _checksums(tmp_path / "workers") == _checksums(tiny_reference)


def test_dask_cluster_gives_the_same_files(tiny_plans, tiny_reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        report = export_plans(tiny_plans, tmp_path / "dask", scheduler=client, **TINY_KW)
    assert [o.status for o in report.outcomes] == ["ok", "ok"]
    assert _checksums(tmp_path / "dask") == _checksums(tiny_reference)


def test_unreachable_scheduler_is_an_input_error(tiny_plans, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from planner.export import batch

    monkeypatch.setattr(batch, "DASK_CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        export_plans(tiny_plans[:1], tmp_path / "x", scheduler="tcp://127.0.0.1:1", **TINY_KW)
