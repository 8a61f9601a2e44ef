"""Load time and peak memory of the DICOM series reader against SimpleITK.

Writes a 512 x 512 x 300 int16 CT series (unsigned 16-bit stored values with intercept
-1024, as scanners write them; shuffled file names) into a temporary folder with
``write_dicom_series``, then loads it repeatedly, each load in a fresh Python process:

- ``cryoplan``: ``planner.imaging.read_volume(folder)`` (header scan, sort, read);
- ``simpleitk``: ``ImageSeriesReader`` on ``GetGDCMSeriesFileNames(folder)`` (GDCM sorts
  the files too), plus a NumPy view of the result.

Each process reports its load time and peak resident memory (``resource.getrusage``,
cross-checked with the kernel's ``VmHWM``); memory is shown both as the process peak and
as the growth over the process's footprint just before loading (imports done), which is
what the reader itself costs. The series is written by a separate process too: on Linux
a child inherits its parent's peak RSS in ``ru_maxrss`` across fork and exec, so the
parent must stay small. Files are in the page cache (written just before), so this
measures parsing and copying, not disk.

Targets: cryoplan no slower than SimpleITK, and its memory growth under twice the
volume size (2 x 157 MB).

Usage::

    .venv/bin/python benchmarks/bench_dicom_load.py [--slices 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READERS = ("cryoplan", "simpleitk")


def worker(reader: str, folder: str) -> None:
    """Load ``folder`` once with ``reader`` and print one JSON line of measurements."""
    import resource

    import numpy as np

    if reader == "cryoplan":
        import pydicom  # noqa: F401 - the library import is not the reader's cost (as for SimpleITK)

        from planner.imaging import read_volume
    else:
        import SimpleITK as sitk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if reader == "cryoplan":
        array = read_volume(folder).array
    else:
        series_reader = sitk.ImageSeriesReader()
        series_reader.SetFileNames(series_reader.GetGDCMSeriesFileNames(folder))
        image = series_reader.Execute()
        array = sitk.GetArrayViewFromImage(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/status") as status:
        high_water = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({
        "seconds": seconds,
        "peak_bytes": peak,
        "vmhwm_bytes": high_water,
        "growth_bytes": peak - before,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "checksum": int(array.astype(np.int64).sum()),
    }))


def make_series(folder: Path, n_slices: int) -> int:
    """Write the test series; return the int16 volume size in bytes."""
    import numpy as np

    from planner.imaging.dicom_write import write_dicom_series
    from planner.volume import Volume, affine_from_geometry

    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 3071, size=(n_slices, 512, 512), dtype=np.int16)
    volume = Volume(array, affine_from_geometry((0.7, 0.7, 1.0), (-179.0, -179.0, -150.0)), modality="CT")
    write_dicom_series(volume, folder, shuffle_names=True, rng=1)
    return array.nbytes


def run_once(reader: str, folder: Path) -> dict:
    """One load in a fresh process."""
    command = [sys.executable, __file__, "--worker", reader, str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("READER", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--make", metavar="FOLDER", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(*options.worker)
        return
    if options.make:
        print(make_series(Path(options.make), options.slices))
        return

    with tempfile.TemporaryDirectory(prefix="cryoplan-bench-dicom-") as scratch:
        folder = Path(scratch)
        start = time.perf_counter()
        make = [sys.executable, __file__, "--make", str(folder), "--slices", str(options.slices)]
        made = subprocess.run(make, capture_output=True, text=True, cwd=REPO, check=True)
        volume_bytes = int(made.stdout.strip().splitlines()[-1])
        print(f"wrote 512x512x{options.slices} CT series ({volume_bytes / 1e6:.0f} MB as int16) "
              f"in {time.perf_counter() - start:.1f} s; {options.repeats} loads per reader, "
              "each in a fresh process")
        results = {reader: [] for reader in READERS}
        for _ in range(options.repeats):  # interleaved, so drift hits both readers alike
            for reader in READERS:
                results[reader].append(run_once(reader, folder))

    summary = {}
    print(f"\n{'reader':<10} {'median s':>9} {'min s':>7} {'peak MB':>8} {'VmHWM MB':>9} "
          f"{'growth MB':>10} {'growth/volume':>14}  dtype")
    for reader, runs in results.items():
        seconds = [run["seconds"] for run in runs]
        growth = statistics.median(run["growth_bytes"] for run in runs)
        summary[reader] = {"seconds": statistics.median(seconds), "growth": growth}
        print(f"{reader:<10} {statistics.median(seconds):9.3f} {min(seconds):7.3f} "
              f"{statistics.median(run['peak_bytes'] for run in runs) / 1e6:8.0f} "
              f"{statistics.median(run['vmhwm_bytes'] for run in runs) / 1e6:9.0f} "
              f"{growth / 1e6:10.0f} {growth / volume_bytes:14.2f}  {runs[0]['dtype']}")
    same = results["cryoplan"][0]["checksum"] == results["simpleitk"][0]["checksum"]
    speed_ratio = summary["simpleitk"]["seconds"] / summary["cryoplan"]["seconds"]
    memory_ratio = summary["cryoplan"]["growth"] / summary["simpleitk"]["growth"]
    print(f"\ncryoplan is {speed_ratio:.2f}x the speed of SimpleITK (target >= 1), "
          f"uses {memory_ratio:.2f}x its memory growth; "
          f"memory growth {summary['cryoplan']['growth'] / volume_bytes:.2f}x the volume (target < 2); "
          f"same voxel sum: {same}")


if __name__ == "__main__":
    main()
