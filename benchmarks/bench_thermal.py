"""Speed of the ice-ball engine on the two standard cases (homogeneous muscle).

(a) cryoneurolysis: two 16 G N2O probes (1.65 mm, -75 degC surface, 7 mm active) 6 mm apart,
    freeze 120 s / passive thaw 60 s / freeze 120 s, 0.25 mm cells near the probes; target < 5 s.
(b) cryoablation: three 17 G argon probes (1.47 mm, -140 degC, 35 mm active) on a 15 mm
    triangle, 600 / 300 / 600 s, 0.5 mm cells near the probes; target < 30 s.

Reports wall time, cells, steps, stages, cell-stage updates per second and the machine's
memory bandwidth measured in the same run (a large numpy copy), and the bandwidth bound of
the kernel's memory traffic. No asserts: figures for the record.

    .venv/bin/python benchmarks/bench_thermal.py [a|b|all] [--layout=nested|rectilinear] [--seconds=S]
        [--core-margin=MM] [--threads=N] [--json]

``--seconds=S`` runs only the first S seconds of each protocol, on the grid of the whole
protocol, and projects the full solve from the measured rate and the planned work (the step
plan is computed exactly, without solving); ``--core-margin=MM`` overrides the fine core's
margin around the probes. ``--layout`` picks the solver grid (``simulate``'s ``layout``; default
``nested``, as for plans).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from planner.labels import Tissue
from planner.thermal import PlacedProbe, ProbeBoundary, ProtocolStep, generic_soft_tissue, simulate
from planner.thermal.simulation import default_margins

MUSCLE = int(Tissue.MUSCLE)
PROPERTIES = {MUSCLE: generic_soft_tissue(perfusion=0.0005, name="muscle (generic soft tissue)")}
# Bytes per cell per RKL2 stage with float32 state: temperature/conductivity pass (read H,
# tissue; write T, K) and stencil pass (read T, K, tissue, Y1, Y2, Y0, L0; write out).
BYTES_PER_CELL_STAGE = 13 + 29


def memory_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Read + write GB/s of a large numpy copy (best of ``repeats``)."""
    source = np.ones(size_mb * 2**20 // 8)
    target = np.empty_like(source)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def kernel_seconds_per_cell_stage(shape, repeats: int = 20) -> float:
    """Seconds per cell of one RKL2 stage's two kernel passes (temperature / conductivity, then
    the stencil with the update) on one thread, for a random frozen-to-unfrozen state of ``shape``.

    Run once on a block that fits in a core's L2 cache and once on a benchmark-sized grid: equal
    figures mean the kernels are bound by arithmetic, not by memory traffic."""
    import numba

    from planner.thermal import kernels
    from planner.thermal.solver import _Tables

    tables = _Tables([PROPERTIES[MUSCLE]], 37.0, np.float32)
    rng = np.random.default_rng(0)
    H = tables.enthalpy(np.zeros(shape, np.uint8), rng.uniform(-80.0, 37.0, shape)).astype(np.float32)
    tissue = np.zeros(shape, np.uint8)
    T, K, P, Y2, out = (np.empty_like(H) for _ in range(5))
    Y2[...] = H
    L0 = np.zeros_like(H)
    coefficients = []
    for n in shape[::-1]:
        c = np.full(n, 1.0 / 0.25e-3**2)
        c_minus, c_plus = c.copy(), c.copy()
        c_minus[0] = c_plus[-1] = 0.0
        coefficients += [c_minus, c_plus, np.full(n, 0.5)]
    table_args = (tables.solidus, tables.liquidus, tables.h_liquidus, tables.c_frozen, tables.c_unfrozen,
                  tables.k_frozen, tables.k_unfrozen, tables.k_varies, tables.k_scale, tables.perfusion,
                  tables.metabolic, 37.0)

    def one_stage():
        kernels.temperature_conductivity(H, tissue, *table_args, T, K, P)
        kernels.stage(T, K, P, *coefficients, H, Y2, H, L0, out, 2, 1.9, -0.9, 1e-3, -1e-4)

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one_stage()
        start = time.perf_counter()
        for _ in range(repeats):
            one_stage()
        return (time.perf_counter() - start) / repeats / H.size
    finally:
        numba.set_num_threads(previous)


def threads_used() -> int:
    import numba

    return numba.config.NUMBA_NUM_THREADS


def load_average() -> float:
    try:
        with open("/proc/loadavg") as handle:
            return float(handle.read().split()[0])
    except OSError:
        return float("nan")


def case_a():
    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=5.0)
    probes = [
        PlacedProbe(f"N2O {i}", (x, 0.0, 0.0), (x, 0.0, 60.0), 1.65, 7.0, boundary) for i, x in enumerate((-3.0, 3.0))
    ]
    protocol = [ProtocolStep("freeze", 120.0), ProtocolStep("passive_thaw", 60.0), ProtocolStep("freeze", 120.0)]
    return probes, protocol, 0.25


def case_b():
    boundary = ProbeBoundary("temperature", freeze_temperature=-140.0, cooldown_time=10.0)
    circumradius = 15.0 / np.sqrt(3.0)
    probes = []
    for i in range(3):
        angle = 2 * np.pi * i / 3
        x, y = circumradius * np.cos(angle), circumradius * np.sin(angle)
        probes.append(PlacedProbe(f"Ar {i}", (x, y, 0.0), (x, y, 100.0), 1.47, 35.0, boundary))
    protocol = [ProtocolStep("freeze", 600.0), ProtocolStep("passive_thaw", 300.0), ProtocolStep("freeze", 600.0)]
    return probes, protocol, 0.5


def truncate(protocol, seconds):
    """The first ``seconds`` of ``protocol``."""
    out, left = [], seconds
    for step in protocol:
        if left <= 0:
            break
        out.append(ProtocolStep(step.kind, min(step.duration, left), step.probes, step.thaw_temperature))
        left -= step.duration
    return out


def run_case(name, builder, *, seconds=None, **options):
    probes, protocol, spacing = builder()
    planned = simulate(probes, protocol, tissue=MUSCLE, properties=PROPERTIES, spacing_mm=spacing, count_only=True,
                       **options)
    full_updates = planned.history["stage_updates"]
    if seconds is not None:
        # the grid of the whole protocol, not the (smaller) one a shortened protocol would get
        core, outer = default_margins(probes, protocol, PROPERTIES, spacing)
        options = {"core_margin_mm": core, "outer_margin_mm": outer, **options}
        protocol = truncate(protocol, seconds)
    # warm the numba cache outside the timing
    simulate(probes[:1], [ProtocolStep("freeze", 1.0)], tissue=MUSCLE, properties=PROPERTIES, spacing_mm=1.0,
             core_margin_mm=2.0, outer_margin_mm=2.0)
    start = time.perf_counter()
    cpu_start = time.process_time()
    marks = []

    def report(fraction):
        if not marks or fraction >= marks[-1] + 0.05:
            marks.append(fraction)
            print(f"  {name}: {fraction:.0%} after {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    result = simulate(probes, protocol, tissue=MUSCLE, properties=PROPERTIES, spacing_mm=spacing, progress=report,
                      **options)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    cells = result.history["solver_cells"]
    stage_updates = result.history.get("stage_updates", float("nan"))
    rate = stage_updates / result.run_time_s
    summary = result.summary()
    return {
        "case": name,
        "simulated_s": sum(step.duration for step in protocol),
        "full_protocol_cell_stage_updates": full_updates,
        "full_protocol_steps": planned.steps,
        "full_protocol_cells": planned.history["solver_cells"],
        "projected_full_solve_s": full_updates / rate,
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": options.get("threads", "auto"),
        "layout": options.get("layout"),
        "solve_s": result.run_time_s,
        "cells": cells,
        "grid": f"{cells} cells solved, results on {result.grid!r}",
        "steps": result.steps,
        "max_stages": result.stages,
        "cell_stage_updates": stage_updates,
        "cell_stage_updates_per_s": rate,
        "cell_stage_updates_per_cpu_s": stage_updates / cpu,
        "kernel_bound_per_s": None,
        "isotherms": {k: {"volume_ml": v["volume_ml_final"], "extent_mm": v["extent_mm_final"]}
                      for k, v in summary["isotherms"].items()},
        "notes": result.notes,
    }


def main(argv):
    which = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "all"
    seconds = None
    for arg in argv:
        if arg.startswith("--seconds="):
            seconds = float(arg.split("=", 1)[1])
    options = {}
    for arg in argv:
        if arg.startswith("--core-margin="):
            options["core_margin_mm"] = float(arg.split("=", 1)[1])
        if arg.startswith("--threads="):
            options["threads"] = int(arg.split("=", 1)[1])
        if arg.startswith("--layout="):
            options["layout"] = arg.split("=", 1)[1]
    options.setdefault("layout", "nested")
    bandwidth = memory_bandwidth_gbs()
    rows = []
    if which in ("a", "all"):
        rows.append(run_case("a: cryoneurolysis, 2 x 16 G N2O", case_a, seconds=seconds, **options))
    if which in ("b", "all"):
        rows.append(run_case("b: cryoablation, 3 x 17 G argon", case_b, seconds=seconds, **options))
    bound = bandwidth * 1e9 / BYTES_PER_CELL_STAGE
    for row in rows:
        row["kernel_bound_per_s"] = bound
    # 4 x 64 x 96 cells (seven float32 arrays and the tissue index, ~0.7 MB) against the two-probe grid's size
    in_cache = kernel_seconds_per_cell_stage((4, 64, 96))
    in_memory = kernel_seconds_per_cell_stage((101, 73, 97))
    if "--json" in argv:
        print(json.dumps({"memory_bandwidth_gbs": bandwidth, "kernel_ns_per_cell_stage_one_thread":
                          {"in_cache": in_cache * 1e9, "in_memory": in_memory * 1e9}, "cases": rows}, indent=1))
        return
    print(f"load average {load_average():.1f} on {threads_used()} threads (other work on the machine slows every figure)")
    print(f"memory bandwidth (numpy copy, read + write): {bandwidth:.1f} GB/s; "
          f"bound for {BYTES_PER_CELL_STAGE} B/cell-stage: {bound / 1e9:.2f} G cell-stages/s")
    print(f"kernels on one thread: {in_cache * 1e9:.2f} ns per cell-stage on a block in cache, "
          f"{in_memory * 1e9:.2f} ns on a 715k-cell grid (near-equal figures: the kernels are bound by "
          "arithmetic, and the bandwidth bound above is not what limits them)")
    for row in rows:
        print(f"{row['case']} ({row['layout']} grid): wall {row['wall_s']:.1f} s (solve {row['solve_s']:.1f} s), {row['grid']}, "
              f"{row['steps']} steps, up to {row['max_stages']} stages, "
              f"{row['cell_stage_updates_per_s'] / 1e9:.3f} G cell-stages/s "
              f"({row['cell_stage_updates_per_s'] / bound:.0%} of the bandwidth bound); "
              f"cpu {row['cpu_s']:.1f} s, {row['cell_stage_updates_per_cpu_s'] / 1e9:.3f} G cell-stages per cpu-s")
        if row["simulated_s"] < sum(step.duration for step in (case_a() if row["case"].startswith("a") else case_b())[1]):
            print(f"    ran the first {row['simulated_s']:g} s only; the full protocol is {row['full_protocol_steps']} steps, "
                  f"{row['full_protocol_cell_stage_updates']:.3g} cell-stage updates: projected solve "
                  f"{row['projected_full_solve_s']:.0f} s at this rate")
        for level, iso in row["isotherms"].items():
            ext = iso["extent_mm"]
            print(f"    {level:>4} degC: {iso['volume_ml']:.2f} ml, along {ext['along']:.1f} mm, "
                  f"across {ext['across']:.1f} mm")
        for note in row["notes"]:
            print(f"    note: {note}")


if __name__ == "__main__":
    main(sys.argv)
