"""Build time of the built-in demo cases (planner.demo).

Each case is built from scratch (the cache cleared) several times at the default
0.5 mm grid and the median wall time reported, with the CT size. Target: each case
well under 5 s on one core, so that ``planner demo`` and the tests that use the cases
stay quick.

Usage::

    .venv/bin/python benchmarks/bench_demo.py [--repeats 3] [--spacing 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner.demo as demo  # noqa: E402

TARGET_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=0.5, help="CT voxel size, mm")
    args = parser.parse_args()
    slow = False
    for name in demo.list_demo_cases():
        times = []
        for _ in range(args.repeats):
            demo._build_cached.cache_clear()
            start = time.perf_counter()
            case = demo.build_demo_case(name, spacing_mm=args.spacing)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        slow |= median > TARGET_S
        ni, nj, nk = case.ct.shape_xyz
        print(
            f"{name:<12} {median:6.2f} s  (min {min(times):.2f})  CT {ni}x{nj}x{nk} "
            f"= {case.ct.array.nbytes / 1e6:.1f} MB  target < {TARGET_S:.0f} s"
        )
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
