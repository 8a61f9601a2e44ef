"""Time of the suggested-placement search and of the metrics, on the demo cases.

For each demo case of the library (``data/cases``): the preview search of
:func:`planner.suggest.suggest_placement` over the case's target segment (its first run
pays for the single-probe preview table, later runs read it from the cache: both are
reported), and :func:`planner.metrics.compute_metrics` on a coarse full-solver run of the
case plan. Targets on a 2-core machine: the search (table cached) under 15 s, the metrics
under 3 s, so that the browser app can offer "suggest" and show numbers after a freeze
without a long wait.

Usage::

    .venv/bin/python benchmarks/bench_suggest.py [--preview-spacing 1.0] [--confirm]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.anatomy import Nerve, nerve_crossings  # noqa: E402
from planner.cases import list_cases, load_case  # noqa: E402
from planner.demo import build_demo_case  # noqa: E402
from planner.metrics import AXONOTMESIS_C, compute_metrics  # noqa: E402
from planner.plan import DemoVolume, protocol_steps  # noqa: E402
from planner.simulation import run_plan  # noqa: E402
from planner.suggest import suggest_placement  # noqa: E402

SEARCH_TARGET_S = 15.0
METRICS_TARGET_S = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preview-spacing", type=float, default=1.0, help="preview table solver cells, mm")
    parser.add_argument("--solver-spacing", type=float, default=1.0, help="full solver cells for the metrics run, mm")
    parser.add_argument("--confirm", action="store_true", help="also confirm each suggestion with the full solver")
    args = parser.parse_args()
    slow = False
    with tempfile.TemporaryDirectory() as cache:
        for info in list_cases():
            plan, path = load_case(info.name) if info.available else (None, None)
            if plan is None or not isinstance(plan.volume, DemoVolume):
                continue
            case = build_demo_case(plan.volume.demo)
            target = next(n for n in plan.nerves if n.target)
            others = [n for n in plan.nerves if not n.target]
            # A plan whose probe enters its target (a neuroma) is searched the same way.
            probe = plan.probes[0]
            through = bool(nerve_crossings(probe.tip, probe.entry, [Nerve.from_plan(target)], radius_mm=0.5))
            times = []
            for _ in range(2):  # first: table computed; second: cached
                started = time.perf_counter()
                suggestion = suggest_placement(
                    target, plan.probes[0].model, labels=case.labels, protocol=protocol_steps(plan), nerves=others,
                    vessels=case.vessels, through_target=through, confirm=args.confirm,
                    confirm_spacing_mm=args.solver_spacing, preview_spacing_mm=args.preview_spacing, cache_dir=cache,
                )
                times.append(time.perf_counter() - started)
            started = time.perf_counter()
            run = run_plan(plan, plan_path=path, spacing_mm=args.solver_spacing)
            solve = time.perf_counter() - started
            started = time.perf_counter()
            metrics = compute_metrics(run)
            measure = time.perf_counter() - started
            slow |= times[1] > SEARCH_TARGET_S or measure > METRICS_TARGET_S
            covered = metrics.targets[0].covered_mm[AXONOTMESIS_C]
            full = "" if suggestion.covered_mm is None else f", full {suggestion.covered_mm:.1f} mm"
            print(
                f"{info.name:<16} search {times[0]:6.1f} s first, {times[1]:6.1f} s cached "
                f"({suggestion.candidates} placements; preview {suggestion.preview_covered_mm:.1f} mm{full})  "
                f"solve {solve:5.1f} s  metrics {measure:4.2f} s (case plan: {covered:.1f} mm below -20 degC)  "
                f"targets < {SEARCH_TARGET_S:.0f} s / < {METRICS_TARGET_S:.0f} s"
            )
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
