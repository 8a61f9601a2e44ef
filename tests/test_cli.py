"""The planner CLI: help everywhere, JSON output, one-line errors with exit code 2."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from planner.cli import main
from planner.volume import Volume, affine_from_geometry


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the installed entry point as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from planner.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"], ["demo", "--help"]])
def test_help_everywhere(args, capsys):
    assert main(args) == 0
    assert "Usage" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "cryoplan" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    assert main(["info"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("planner: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_path(tmp_path):
    missing = tmp_path / "nothing_here.nii.gz"
    assert_one_line_error(run_cli("info", str(missing)), str(missing), "no such file")


def test_bad_inputs_are_one_clear_line(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image\n")
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    broken_nifti = tmp_path / "broken.nii.gz"
    broken_nifti.write_bytes(gzip.compress(b"\x00" * 100))
    for path in (text_file, empty_folder, broken_nifti):
        assert_one_line_error(run_cli("info", str(path)), path.name)


def test_info_json_and_text_on_a_written_volume(tmp_path):
    from scipy.spatial.transform import Rotation

    from planner.imaging.formats import write_volume

    rotation = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    volume = Volume(
        np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 100,
        affine_from_geometry([0.5, 0.75, 2.0], [10.0, -20.0, 30.0], rotation),
        modality="CT",
        units="HU",
    )
    path = tmp_path / "small.nii.gz"
    write_volume(volume, path)
    result = run_cli("info", str(path), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape_xyz"] == [6, 5, 4]
    np.testing.assert_allclose(info["spacing_mm"], [0.5, 0.75, 2.0], atol=1e-5)
    np.testing.assert_allclose(info["origin_mm"], [10.0, -20.0, 30.0], atol=1e-4)
    np.testing.assert_allclose(np.reshape(info["direction"], (3, 3)), rotation, atol=1e-5)
    assert info["value_range"] == [-100, 19]

    text = run_cli("info", str(path))
    assert text.returncode == 0
    assert "shape (x, y, z)" in text.stdout and "6 x 5 x 4" in text.stdout


def test_info_on_a_demo_case():
    result = run_cli("info", "demo:intercostal", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["modality"] == "CT" and info["units"] == "HU"
    assert info["value_range"][0] < -500 and info["value_range"][1] > 700


def test_unknown_demo_case_is_an_input_error():
    assert_one_line_error(run_cli("info", "demo:elbow"), "elbow")


def small_plan(tmp_path, **changes) -> "Path":
    """A one-probe, 30 s plan in muscle that solves in seconds on a 1 mm grid."""
    plan = {
        "format": "cryoplan.plan",
        "schema_version": 1,
        "name": "small freeze",
        "volume": None,
        "tissue": {"source": "homogeneous", "class": "muscle", "overrides": {}},
        "probes": [{"name": "A", "model": "n2o-16g", "tip": [0.0, 0.0, 0.0], "entry": [0.0, 0.0, 40.0]}],
        "protocol": [{"kind": "freeze", "duration_s": 30.0}],
        "nerves": [],
        "grid": {"spacing_mm": 1.0},
    }
    plan.update(changes)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(plan))
    return path


def test_simulate_writes_fields_and_a_summary(tmp_path):
    out = tmp_path / "out"
    result = run_cli("simulate", str(small_plan(tmp_path)), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    final = summary["snapshots"][-1]
    assert final["time_s"] == 30.0
    by_level = {iso["level_c"]: iso["volume_ml"] for iso in final["isotherms"]}
    volumes = [by_level[level] for level in (0.0, -20.0, -40.0)]
    assert volumes[0] > volumes[1] > volumes[2] > 0, volumes  # nested isotherms
    assert (out / "min_temperature.vti").is_file()
    assert all((out / name).is_file() for name in summary["outputs"]["snapshots"])

    text = run_cli("simulate", str(small_plan(tmp_path)), "--out", str(out))
    assert text.returncode == 0 and "-20 degC" in text.stdout and "Not for clinical use" in text.stdout


def test_simulate_layout_option_picks_the_solver_grid(tmp_path):
    plan = small_plan(tmp_path, grid={"spacing_mm": 0.5})
    volumes = {}
    for layout in ("nested", "rectilinear"):
        result = run_cli("simulate", str(plan), "--out", str(tmp_path / layout), "--json", "--layout", layout)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["grid"]["solver_layout"] == layout
        volumes[layout] = {iso["level_c"]: iso["volume_ml"] for iso in summary["snapshots"][-1]["isotherms"]}
        cells = summary["grid"]["solver_cells"]
        assert (cells < np.prod(summary["grid"]["cells_xyz"])) == (layout == "nested")
    for level in (0.0, -20.0, -40.0):
        assert volumes["nested"][level] == pytest.approx(volumes["rectilinear"][level], rel=0.03)
    assert_one_line_error(run_cli("simulate", str(plan), "--layout", "octree"), "layout")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"protocol": []}, "protocol"),
        ({"probes": [{"name": "A", "model": "no-such-probe", "tip": [0, 0, 0], "entry": [0, 0, 9]}]}, "no-such-probe"),
        ({"tissue": {"source": "homogeneous", "class": "muscle",
                     "overrides": {"muscle": {"conductivity_unfrozen": -1}}}}, "conductivity_unfrozen"),
    ],
)
def test_simulate_rejects_bad_plans_naming_the_field(tmp_path, changes, fragment):
    assert_one_line_error(run_cli("simulate", str(small_plan(tmp_path, **changes))), fragment)


def test_serve_refuses_a_target_it_cannot_open(tmp_path):
    missing = tmp_path / "plan.json"
    assert_one_line_error(run_cli("serve", str(missing), "--port", "0"), "plan.json")


def test_serve_refuses_a_missing_data_folder(tmp_path):
    assert_one_line_error(run_cli("serve", "intercostal", "--data", str(tmp_path / "nope")), "nope")


def test_cases_lists_the_library_with_notes():
    result = run_cli("cases", "--json")
    assert result.returncode == 0, result.stderr
    library = {case["name"]: case for case in json.loads(result.stdout)}
    assert {"intercostal_t7", "lfcn_asis", "morton_neuroma", "head_supraorbital"} <= set(library)
    assert all(case["note"] for case in library.values())
    assert library["intercostal_t7"]["available"]
    text = run_cli("cases")
    assert text.returncode == 0 and "intercostal_t7" in text.stdout


def test_export_reports_a_bad_plan_exits_nonzero_and_resumes(tmp_path):
    plans = tmp_path / "plans"
    plans.mkdir()
    small_plan(plans).rename(plans / "small.json")
    (plans / "broken.json").write_text("{ not json")
    out = tmp_path / "export"
    args = ("export", str(plans), "--out", str(out), "--views", "axial", "--size", "400x300", "--json")
    first = run_cli(*args)
    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    assert report["counts"]["ok"] == 1 and report["counts"]["failed"] == 1
    failed = [plan for plan in report["plans"] if plan["status"] == "failed"]
    assert "broken" in json.dumps(failed)
    assert (out / "manifest.json").is_file() and (out / "index.html").is_file()

    second = run_cli(*args)
    assert json.loads(second.stdout)["counts"]["skipped"] == 1
