"""The fast ice-ball preview (planner.thermal.preview): its error against the full solver, and its speed.

Errors (``--errors``): the example plans in data/plans/ (muscle_two_16g, argon_three_probes,
intercostal_demo) and single oblique probes are run through the full solver (run_plan /
simulate) and previewed with tables precomputed at the same core spacing. Per isotherm
(0, -20, -40 degC, on the lowest temperature each cell reached):

- volume difference, %: cells of the solver's grid colder than the level in the preview
  (sampled at the cell centres) against those colder in the full result (cells inside a
  probe's body are left out on both sides: the solver keeps its insulated shaft at body
  temperature, the preview interpolates across it);
- max-diameter difference, mm: the preview lattice's isosurface against the full result's;
- mean (volume-weighted) and max absolute temperature difference over the cells where
  either is below 0 degC.

Full results are kept under benchmarks/results/preview/ (ignored by git) and reused
between runs, keyed by the plan and the solver's source fingerprint (a changed solver runs
them again). The precomputed tables live in benchmarks/results/preview/cache/.

Timing (``--timing``): the cold precompute of each probe model + protocol (a full
single-probe solve, recorded when its table was made), the first lookup in a fresh process
(numba's compiled-kernel cache loading), and the warm per-move time: one probe of two / three
moved by up to 2 mm and 5 degrees, the 0.5 mm lattice rebuilt with its isotherm volumes,
median of many moves (target < 100 ms), plus the three isotherm meshes a view redraws and a
5000-point lookup for the placement search.

Usage::

    .venv/bin/python benchmarks/bench_preview.py --errors --timing [--moves 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "preview"
os.environ.setdefault("CRYOPLAN_CACHE_DIR", str(RESULTS / "cache"))

from planner import __version__  # noqa: E402
from planner.plan import load_plan, placed_probes, plan_sha256, protocol_steps  # noqa: E402
from planner.simulation import load_plan_volume, plan_tissue_properties, run_plan  # noqa: E402
from planner.thermal import PlacedProbe, ProtocolStep, simulate  # noqa: E402
from planner.thermal.grid import ThermalGrid  # noqa: E402
from planner.thermal.geometry import Cylinder  # noqa: E402
from planner.thermal.preview import (  # noqa: E402
    COMBINE_MODES,
    preview_at_points,
    preview_ice_ball,
    solver_fingerprint,
)

LEVELS = (0.0, -20.0, -40.0)
TARGET_MOVE_S = 0.100
PLANS = ROOT / "data" / "plans"


# ------------------------------------------------------------------------ cases
def plan_case(name: str, spacing_mm: float) -> dict:
    path = PLANS / f"{name}.json"
    plan = load_plan(path)
    properties, label = plan_tissue_properties(plan)
    labels = None if label is not None else load_plan_volume(plan, plan_path=path)[1]
    return {
        "name": name,
        "spacing_mm": spacing_mm,
        "probes": list(placed_probes(plan)),
        "protocol": list(protocol_steps(plan)),
        "properties": properties,
        "tissue": label,
        "labels": labels,
        "identity": plan_sha256(plan),
        "run": lambda: run_plan(plan, plan_path=path, spacing_mm=spacing_mm).result,
    }


def single_case(name: str, plan_name: str, spacing_mm: float, direction) -> dict:
    """The plan's first probe alone, tilted to ``direction`` about its tip (oblique to the world axes)."""
    case = plan_case(plan_name, spacing_mm)
    first = case["probes"][0]
    axis = np.asarray(direction, dtype=float)
    axis /= np.linalg.norm(axis)
    length = float(np.linalg.norm(np.subtract(first.entry, first.tip)))
    probe = PlacedProbe(first.name, first.tip, tuple(np.add(first.tip, length * axis)), first.diameter_mm,
                        first.active_length_mm, first.boundary, first.tip_offset_mm)
    protocol = [ProtocolStep(s.kind, s.duration, None, s.thaw_temperature) for s in case["protocol"]]
    case.update(name=name, probes=[probe], protocol=protocol,
                identity=case["identity"] + repr(probe) + repr(protocol))
    case["run"] = lambda: simulate([probe], protocol, tissue=case["tissue"], properties=case["properties"],
                                   spacing_mm=spacing_mm)
    return case


def cases() -> list[dict]:
    return [
        single_case("single 16 G N2O, muscle (oblique)", "muscle_two_16g", 0.5, (1.0, 2.0, 2.0)),
        plan_case("muscle_two_16g", 0.5),
        single_case("single 17 G argon, R98 (oblique)", "argon_three_probes", 1.0, (2.0, 1.0, 2.0)),
        plan_case("argon_three_probes", 1.0),
        plan_case("intercostal_demo", 0.5),
    ]


# ------------------------------------------------------------------------ reference runs
def reference(case: dict) -> dict:
    """The full result's grid, minimum temperature and isotherm extents, from disk when present."""
    identity = f"{case['identity']}|{case['spacing_mm']}|{__version__}|{solver_fingerprint()}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = RESULTS / f"full_{digest}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        stored["meta"] = json.loads(str(stored["meta"]))
        return stored
    print(f"  running the full solver for {case['name']} ...", flush=True)
    result = case["run"]()
    meta = {
        "case": case["name"],
        "solve_s": result.run_time_s,
        "method": result.method,
        "grid": repr(result.grid),
        "extents": {f"{level:g}": result.isotherm_extent_mm(level, "min") for level in LEVELS},
        "volumes_ml": {f"{level:g}": result.isotherm_volume_ml(level, "min") for level in LEVELS},
    }
    grid = result.grid
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_faces=grid.x_faces, y_faces=grid.y_faces, z_faces=grid.z_faces,
                        origin=grid.origin, direction=grid.direction, min_temperature=result.min_temperature,
                        meta=np.array(json.dumps(meta)))
    return reference(case)


def in_probe(points: np.ndarray, probes) -> np.ndarray:
    """True for points inside a probe's body (tip to entry). The full solver's shaft cells are
    not tissue (they stay at body temperature), so both sides leave them out."""
    inside = np.zeros(len(points), dtype=bool)
    for probe in probes:
        inside |= Cylinder(probe.tip, probe.entry, probe.radius_mm).inside(points)
    return inside


def errors(case: dict, combine: str) -> dict:
    full = reference(case)
    grid = ThermalGrid(full["x_faces"], full["y_faces"], full["z_faces"], full["origin"], full["direction"])
    centres = grid.local_to_world(grid.cell_centres_local().reshape(-1, 3))
    tissue = ~in_probe(centres, case["probes"])
    centres = centres[tissue]
    volumes = grid.cell_volumes().reshape(-1)[tissue]
    full_min = full["min_temperature"].reshape(-1)[tissue]
    common = dict(properties=case["properties"], tissue=case["tissue"], tissue_labels=case["labels"],
                  solver_spacing_mm=case["spacing_mm"], combine=combine)
    started = time.perf_counter()
    preview_min = preview_at_points(case["probes"], case["protocol"], centres, **common)
    lattice = preview_ice_ball(case["probes"], case["protocol"], spacing_mm=0.5, **common)
    preview_s = time.perf_counter() - started
    either = (full_min < 0) | (preview_min < 0)
    difference = np.abs(preview_min[either] - full_min[either])
    rows = []
    for level in LEVELS:
        v_full = volumes[full_min < level].sum() * 1e-3
        v_prev = volumes[preview_min < level].sum() * 1e-3
        d_full = full["meta"]["extents"][f"{level:g}"]["max_diameter"]
        d_prev = lattice.isotherm_extent_mm(level)["max_diameter"]
        rows.append({
            "level": level, "v_full": v_full, "v_prev": v_prev,
            "dv_pct": 100.0 * (v_prev - v_full) / v_full if v_full > 0 else float("nan"),
            "d_full": d_full, "d_prev": d_prev, "dd_mm": d_prev - d_full,
        })
    return {
        "case": case["name"],
        "combine": combine,
        "probes": len(case["probes"]),
        "spacing_mm": case["spacing_mm"],
        "full_solve_s": full["meta"]["solve_s"],
        "preview_s": preview_s,
        "rows": rows,
        "mean_abs_c": float(np.average(difference, weights=volumes[either])) if difference.size else 0.0,
        "max_abs_c": float(difference.max()) if difference.size else 0.0,
    }


def print_errors(results: list[dict]) -> None:
    print("\n| case | combine | probes | grid mm | level degC | V full ml | V preview ml | dV % | D full mm | D preview mm "
          "| dD mm | mean abs dT degC | max abs dT degC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for row in r["rows"]:
            print(f"| {r['case']} | {r['combine']} | {r['probes']} | {r['spacing_mm']:g} | {row['level']:g} | {row['v_full']:.3f} | "
                  f"{row['v_prev']:.3f} | {row['dv_pct']:+.1f} | {row['d_full']:.1f} | {row['d_prev']:.1f} | "
                  f"{row['dd_mm']:+.1f} | {r['mean_abs_c']:.2f} | {r['max_abs_c']:.1f} |")
    print()
    for r in results[::2]:
        print(f"{r['case']}: full solve {r['full_solve_s']:.0f} s; preview {r['preview_s']:.2f} s "
              "(a first run includes computing the tables)")


# ------------------------------------------------------------------------ timing
def moved(probe: PlacedProbe, rng: np.random.Generator) -> PlacedProbe:
    """``probe`` shifted by up to 2 mm and tilted by up to 5 degrees about its tip."""
    shift = rng.uniform(-2.0, 2.0, 3)
    axis = probe.axis
    tilt = math.radians(rng.uniform(0.0, 5.0))
    other = np.cross(axis, rng.normal(size=3))
    other /= np.linalg.norm(other)
    new_axis = math.cos(tilt) * axis + math.sin(tilt) * other
    tip = np.add(probe.tip, shift)
    length = float(np.linalg.norm(np.subtract(probe.entry, probe.tip)))
    return PlacedProbe(probe.name, tuple(tip), tuple(tip + length * new_axis), probe.diameter_mm,
                       probe.active_length_mm, probe.boundary, probe.tip_offset_mm)


def timing(case: dict, moves: int, combine: str) -> dict:
    common = dict(properties=case["properties"], tissue=case["tissue"], tissue_labels=case["labels"],
                  solver_spacing_mm=case["spacing_mm"], combine=combine)
    probes, protocol = case["probes"], case["protocol"]
    started = time.perf_counter()
    first = preview_ice_ball(probes, protocol, spacing_mm=0.5, **common)
    first_s = time.perf_counter() - started
    cold = {}
    for probe, table in zip(probes, first.tables):
        if table is not None:
            cold[f"{probe.name} ({probe.diameter_mm:g} mm)"] = table.precompute_s
    rng = np.random.default_rng(1)
    move_times, mesh_times, voxels = [], [], []
    base = list(probes)
    for _ in range(moves):
        current = base[:-1] + [moved(base[-1], rng)]
        started = time.perf_counter()
        result = preview_ice_ball(current, protocol, spacing_mm=0.5, **common)
        for level in LEVELS:
            result.isotherm_volume_ml(level)
        move_times.append(time.perf_counter() - started)
        voxels.append(int(np.prod(result.shape)))
        started = time.perf_counter()
        for level in LEVELS:
            result.isotherm_mesh(level)
        mesh_times.append(time.perf_counter() - started)
    points = np.asarray(first.grid.local_to_world(np.random.default_rng(2).uniform(
        first.grid.bounds_local()[0], first.grid.bounds_local()[1], size=(5000, 3))))
    point_times = []
    for _ in range(20):
        started = time.perf_counter()
        preview_at_points(probes, protocol, points, **common)
        point_times.append(time.perf_counter() - started)
    return {
        "case": f"{case['name']} ({combine})",
        "first_call_s": first_s,
        "cold_precompute_s": cold,
        "move_median_s": statistics.median(move_times),
        "move_p90_s": float(np.percentile(move_times, 90)),
        "mesh_median_s": statistics.median(mesh_times),
        "voxels_median": int(statistics.median(voxels)),
        "points5000_median_s": statistics.median(point_times),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true",
                        help="error table against the full solver (slow the first time)")
    parser.add_argument("--timing", action="store_true", help="precompute and per-move times")
    parser.add_argument("--moves", type=int, default=100)
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    args = parser.parse_args()
    if not (args.errors or args.timing):
        args.errors = args.timing = True
    selected = [c for c in cases() if args.only is None or args.only in c["name"]]
    slow = False
    if args.errors:
        results = []
        for case in selected:
            print(f"case {case['name']}", flush=True)
            for combine in COMBINE_MODES:
                results.append(errors(case, combine))
        print_errors(results)
    if args.timing:
        print(f"\ntiming on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (kernels single-threaded)")
        for case in selected:
            if len(case["probes"]) < 2:
                continue
            for combine in COMBINE_MODES:
                t = timing(case, args.moves, combine)
                slow |= t["move_median_s"] > TARGET_MOVE_S
                cold = ", ".join(f"{k}: {v:.0f} s" for k, v in t["cold_precompute_s"].items()) or "n/a"
                print(f"{t['case']}: first call in this process {t['first_call_s']:.2f} s; cold precompute "
                      f"per probe's table ({cold}); per move median {1e3 * t['move_median_s']:.1f} ms "
                      f"(p90 {1e3 * t['move_p90_s']:.1f}) on {t['voxels_median']} voxels, target < "
                      f"{1e3 * TARGET_MOVE_S:.0f} ms; three isotherm meshes {1e3 * t['mesh_median_s']:.1f} ms; "
                      f"5000 points {1e3 * t['points5000_median_s']:.2f} ms")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
