"""Batch export speed: screenshots per minute with 1 and 2 workers, and the cost of one
picture against a bare pyvista off-screen render of the same scene.

    .venv/bin/python benchmarks/bench_export.py [--plans data/plans data/cases] [--spacing 1.0]
        [--size 1600x1200] [--workers 1,2] [--repeats 3] [--skip-throughput]

1. Throughput: ``export_plans`` on every plan in ``--plans`` (default: the example plans
   and the case library; all five views at the end of the protocol, ``--force``), once
   per worker count. Plans that cannot run here (a case on an image that is not
   installed) are reported and left out of the figures. Reported: pictures per minute of wall
   time, whole export (solve, pictures, data, reports), and the time of the solves alone.
2. Cost per picture, on the intercostal demo plan: the export's own render of each view
   (annotated picture and PNG encoding; the 3D scene built once and reused) against a
   bare pyvista off-screen render of the same content at the same size (plain
   ``add_mesh`` of the same surfaces and tubes, or the slice of the CT and the temperature
   contours on the same plane, then ``screenshot``). Reported: medians and the ratio.

Research and education only; not for clinical use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def throughput(plans: list[Path], *, spacing: float, size: str, workers: int) -> dict:
    from planner.export import export_plans

    with tempfile.TemporaryDirectory(prefix="bench_export_") as folder:
        started = time.perf_counter()
        report = export_plans(plans, Path(folder) / "out", size=size, spacing_mm=spacing, workers=workers,
                              force=True)
        wall = time.perf_counter() - started
    for outcome in report.failed:
        print(f"  (left out: {outcome.slug}: {outcome.message})")
    solve = sum(o.record["solver"]["solve_s"] for o in report.ok)
    return {"workers": workers, "plans": len(report.ok), "pictures": report.images, "wall_s": wall,
            "solve_s": solve, "per_minute": 60.0 * report.images / wall}


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_3d(scene, scene3d, shape, snapshot):
    """A plain pyvista plotter with the same meshes and camera as the export's 3D view."""
    import pyvista as pv

    from planner.scene import palette, view3d

    rows, cols = shape
    plotter = pv.Plotter(off_screen=True, window_size=[cols, rows])
    for key, surface in scene3d.tissue_surfaces().items():
        plotter.add_mesh(surface, color=(0.8, 0.7, 0.6), opacity=0.2)
    for nerve in scene.nerves:
        plotter.add_mesh(pv.lines_from_points(np.asarray(nerve.points, float)).tube(radius=nerve.radius_mm),
                         color=palette.NERVE_COLOR)
    for vessel in scene.vessels:
        plotter.add_mesh(pv.lines_from_points(np.asarray(vessel.points, float)).tube(radius=vessel.radius_mm),
                         color=palette.VESSEL_COLOR)
    for probe in scene.probes:
        tip, entry = np.asarray(probe.tip, float), np.asarray(probe.entry, float)
        plotter.add_mesh(pv.Cylinder(center=(tip + entry) / 2, direction=tip - entry, radius=probe.radius_mm,
                                     height=float(np.linalg.norm(tip - entry))), color="grey")
    for level, surface in view3d.isotherm_surfaces(scene.result, scene.isotherms_c, snapshot).items():
        if surface.n_points:
            plotter.add_mesh(surface, color=palette.isotherm_color(level), opacity=0.5)
    camera = scene3d.camera
    plotter.camera.focal_point = camera["focal_point_mm"]
    plotter.camera.position = tuple(np.asarray(camera["focal_point_mm"]) + 100 * np.asarray(camera["towards_camera"]))
    plotter.camera.up = camera["up"]
    plotter.enable_parallel_projection()
    plotter.camera.parallel_scale = camera["mm_per_px"] * rows / 2
    plotter.reset_camera_clipping_range()
    return plotter


def bare_slice(scene, plane, snapshot):
    """A plain pyvista plotter showing the CT sliced on ``plane`` and the isotherm lines."""
    import pyvista as pv

    rows, cols = plane.shape
    plotter = pv.Plotter(off_screen=True, window_size=[cols, rows])
    centre = plane.pixel_to_world((rows - 1) / 2, (cols - 1) / 2)
    ct = scene.volume.to_pyvista("values")
    plotter.add_mesh(ct.slice(normal=plane.normal, origin=centre), scalars="values", cmap="gray",
                     clim=(scene.window.level - scene.window.width / 2, scene.window.level + scene.window.width / 2),
                     show_scalar_bar=False)
    temperature = scene.result.temperature_volume(snapshot).to_pyvista("degC").slice(normal=plane.normal,
                                                                                      origin=centre)
    lines = temperature.contour(list(scene.isotherms_c), scalars="degC")
    if lines.n_points:
        plotter.add_mesh(lines, color="blue", line_width=2)
    plotter.camera.focal_point = centre
    plotter.camera.position = centre - 100 * plane.normal
    plotter.camera.up = -plane.v
    plotter.enable_parallel_projection()
    plotter.camera.parallel_scale = plane.spacing_mm * rows / 2
    plotter.reset_camera_clipping_range()
    return plotter


def picture_costs(*, size: str, spacing: float, repeats: int) -> list[tuple]:
    from planner.export.batch import _png_bytes
    from planner.export.screenshots import Scene3D, header_height_px, plan_scene, render_view, view_plane
    from planner.export.settings import parse_size
    from planner.simulation import run_plan

    width, height = parse_size(size)
    run = run_plan(REPO / "data" / "plans" / "intercostal_demo.json", spacing_mm=spacing)
    scene = plan_scene(run)
    shape = (height - header_height_px(height), width)
    rows = []
    start = time.perf_counter()
    scene3d = Scene3D(scene, shape)
    build = time.perf_counter() - start
    try:
        ours = _median_time(lambda: _png_bytes(render_view(scene, "3d", -1, size=(width, height),
                                                           scene3d=scene3d)[0], title="t"), repeats)

        def bare_first():
            plotter = bare_3d(scene, scene3d, shape, -1)
            plotter.screenshot(return_img=True)
            plotter.close()

        bare = _median_time(bare_first, repeats)
        plotter = bare_3d(scene, scene3d, shape, -1)
        plotter.screenshot(return_img=True)

        def bare_again():
            plotter.render()
            plotter.screenshot(return_img=True)

        bare_frame = _median_time(bare_again, repeats)
        plotter.close()
        rows.append(("3d", ours, bare, bare_frame, build))
    finally:
        scene3d.close()
    for view in ("axial", "coronal", "sagittal", "probe"):
        ours = _median_time(lambda: _png_bytes(render_view(scene, view, -1, size=(width, height))[0], title="t"),
                            repeats)
        plane = view_plane(scene, view, shape)

        def bare_first():
            plotter = bare_slice(scene, plane, -1)
            plotter.screenshot(return_img=True)
            plotter.close()

        bare = _median_time(bare_first, repeats)
        rows.append((view, ours, bare, None, None))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=Path, nargs="+",
                        default=[p for p in (REPO / "data" / "plans", REPO / "data" / "cases") if p.is_dir()])
    parser.add_argument("--spacing", type=float, default=1.0, help="solver grid spacing, mm")
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; pictures {args.size}; solver grid {args.spacing:g} mm")
    if not args.skip_throughput:
        for workers in (int(w) for w in args.workers.split(",")):
            r = throughput(args.plans, spacing=args.spacing, size=args.size, workers=workers)
            print(f"workers {r['workers']}: {r['pictures']} pictures of {r['plans']} plans in {r['wall_s']:.1f} s "
                  f"= {r['per_minute']:.1f} pictures/min (solves {r['solve_s']:.1f} s of that, summed over plans)")
    print("cost per picture, intercostal demo (median of "
          f"{args.repeats}): export render+annotate+PNG vs bare pyvista render of the same content")
    for view, ours, bare, bare_frame, build in picture_costs(size=args.size, spacing=args.spacing,
                                                             repeats=args.repeats):
        line = f"  {view:<9} export {ours:6.3f} s   bare pyvista {bare:6.3f} s   ratio {ours / bare:5.2f}"
        if bare_frame is not None:
            line += (f"   (bare re-render only {bare_frame:.3f} s, ratio {ours / bare_frame:.1f}; "
                     f"3D scene built once per plan {build:.2f} s)")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
