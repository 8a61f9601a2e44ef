"""Speed of the anatomy functions a planner calls interactively (planner.anatomy).

On the demo "intercostal" case (141 x 121 x 145 voxels at 0.5 mm, oblique grid), and on
the real head CT (256 x 256 x 108) when Debian's invesalius-examples is installed:

- check_trajectory and place_probe: called while a probe is dragged; target < 0.25 s;
- trace_nerve between two clicks 47 mm apart: target < 3 s;
- nerves_from_labels and tissue_surfaces of a whole case: target < 3 s;
- tissue_from_label_map (a TotalSegmentator-like map over a CT base): target < 5 s.

Each is timed several times and the median reported. Exit status 1 when a median misses
its target.

Usage::

    .venv/bin/python benchmarks/bench_anatomy.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

from planner import anatomy  # noqa: E402
from planner.demo import build_demo_case  # noqa: E402
from planner.labels import Tissue  # noqa: E402
from planner.volume import Volume  # noqa: E402

HEAD_CT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def timed(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name: str, seconds: float, target: float) -> bool:
    slow = seconds > target
    print(f"{name:<48} {seconds:7.3f} s  target < {target:g} s{'  SLOW' if slow else ''}")
    return slow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = args.repeats
    slow = False

    case = build_demo_case("intercostal")
    marks = case.landmarks
    depth = marks["target_nerve_point"] - marks["skin_entry_suggestion"]
    depth /= np.linalg.norm(depth)
    tip = marks["target_nerve_point"] - depth * 3.0
    entry = marks["skin_entry_suggestion"]
    nerves = [anatomy.Nerve.from_plan(line) for line in case.nerves]
    slow |= report("demo: check_trajectory (3 nerves)", timed(repeats, lambda: anatomy.check_trajectory(
        tip, entry, case.labels, nerves=nerves, probe_diameter_mm=1.65)), 0.25)
    slow |= report("demo: place_probe (tip + direction)", timed(repeats, lambda: anatomy.place_probe(
        case.labels, tip=tip, direction=depth, model="n2o-16g")), 0.25)
    slow |= report("demo: nerves_from_labels (3 nerves)", timed(repeats, lambda: anatomy.nerves_from_labels(
        case.labels)), 3.0)
    slow |= report("demo: tissue_surfaces (all classes)", timed(repeats, lambda: anatomy.tissue_surfaces(
        case.labels)), 3.0)
    target_nerve = case.target_nerve.points
    clicks = target_nerve[[10, 130]]  # 47 mm apart along the T7 nerve, on the CT
    slow |= report(f"demo: trace_nerve ({np.linalg.norm(clicks[1] - clicks[0]):.0f} mm)", timed(
        repeats, lambda: anatomy.trace_nerve(case.ct, clicks, radius_mm=1.2)), 3.0)

    if HEAD_CT.exists():
        from planner.imaging import read_volume
        from planner.tissue_map import tissue_from_ct

        ct = read_volume(HEAD_CT)
        labels = tissue_from_ct(ct)
        structures = np.zeros(ct.array.shape, dtype=np.uint8)
        structures[labels.array == Tissue.BONE] = 91  # "skull" in the TotalSegmentator-like table
        segmentation = Volume(structures, ct.affine, modality="SEG", units="label")
        slow |= report("head CT: tissue_from_label_map (over the CT)", timed(
            repeats, lambda: anatomy.tissue_from_label_map(segmentation, "totalsegmentator-like", base=ct)), 5.0)
        body = np.argwhere(labels.array != Tissue.AIR)
        middle = labels.index_to_world(body.mean(axis=0)[::-1])
        outside = middle + np.array([0.0, -200.0, 0.0])
        skin_point = anatomy.skin_crossing(labels, outside, middle, beyond_entry_mm=0.0)
        deep = skin_point + (middle - skin_point) * 0.6
        slow |= report("head CT: check_trajectory (long shaft)", timed(repeats, lambda: anatomy.check_trajectory(
            deep, skin_point, labels, probe_diameter_mm=2.1)), 0.25)
    else:
        print(f"head CT not found at {HEAD_CT}: skipped")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
