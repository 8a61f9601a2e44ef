"""web/ logic without a browser: data-folder safety, the session model, the solver worker."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from planner.errors import InputError
from web.files import DataFolders, file_kind, safe_filename
from web.state import Session

DEMO_TIP = (-82.4, 81.5, -156.6)
DEMO_ENTRY = (-92.0, 107.9, -153.7)


# ---------------------------------------------------------------- files
@pytest.fixture()
def folders(tmp_path):
    data = tmp_path / "data"
    (data / "plans").mkdir(parents=True)
    (data / "plans" / "a.json").write_text("{}")
    (data / "ct.nii.gz").write_bytes(b"x")
    (data / "notes.txt").write_text("not listed")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "b.json").write_text("{}")
    (data / "link").symlink_to(outside, target_is_directory=True)
    return DataFolders.from_paths([data]), data, outside


def test_listing_shows_plans_and_volumes_only_inside_the_folder(folders):
    found, data, _ = folders
    values = {item["value"]: item["kind"] for item in found.listing()}
    assert values == {"0:ct.nii.gz": "volume", "0:plans/a.json": "plan"}


@pytest.mark.parametrize("request_path", ["../secret/b.json", "0:../secret/b.json", "link/b.json",
                                          "plans/../../secret/b.json", "3:plans/a.json"])
def test_paths_outside_the_data_folders_are_refused(folders, request_path):
    found, _, _ = folders
    with pytest.raises(InputError):
        found.resolve(request_path)


def test_paths_inside_resolve(folders):
    found, data, _ = folders
    assert found.resolve("0:plans/a.json") == (data / "plans" / "a.json").resolve()
    assert found.resolve("plans/../ct.nii.gz") == (data / "ct.nii.gz").resolve()
    # An absolute path is read as relative to the folder, never as the machine's own.
    assert found.resolve("/etc/passwd") == data.resolve() / "etc" / "passwd"


def test_uploads_get_a_safe_new_name_inside_the_folder(folders):
    found, data, _ = folders
    first = found.store_upload("../../evil name.nii.gz", b"1")
    second = found.store_upload("evil name.nii.gz", b"2")
    assert first.parent == second.parent == data.resolve() / "uploads"
    assert first.name == "evil_name.nii.gz" and second.name == "evil_name-1.nii.gz"
    assert found.plan_path("../x").parent == data.resolve() / "plans"


def test_without_a_data_folder_nothing_is_written():
    none = DataFolders.from_paths([])
    with pytest.raises(InputError, match="--data"):
        none.store_upload("a.json", b"{}")
    with pytest.raises(InputError, match="--data"):
        none.plan_path("a")
    assert none.listing() == []


def test_file_kinds_and_names():
    assert file_kind("A.NII.GZ") == "volume" and file_kind("p.json") == "plan" and file_kind("x.txt") is None
    assert safe_filename("a/b\\c d.json") == "c_d.json"
    with pytest.raises(InputError):
        safe_filename("../..")


# ---------------------------------------------------------------- session
def test_probe_edits_and_the_plan_round_trip(tmp_path):
    from planner.plan import load_plan, save_plan

    session = Session()
    session.load_demo("intercostal")
    assert session.nerves and session.vessels and session.labels is not None
    index = session.add_probe("n2o-14g", DEMO_TIP, DEMO_ENTRY)
    session.nudge_probe(index, (1.0, 0.0, -2.0))
    assert session.probes[0].tip == pytest.approx((-81.4, 81.5, -158.6))
    before = np.subtract(session.probes[0].tip, session.probes[0].entry)
    session.advance_probe(index, 2.0)
    after = np.subtract(session.probes[0].tip, session.probes[0].entry)
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before) + 2.0)
    with pytest.raises(InputError, match="entry must differ"):
        session.set_probe(index, entry=session.probes[0].tip)
    with pytest.raises(InputError, match="catalogue"):
        session.add_probe("no-such-probe", DEMO_TIP, DEMO_ENTRY)
    session.set_protocol([("freeze", 60), ("passive_thaw", 30)])
    path = save_plan(session.to_plan(), tmp_path / "p.json")
    reopened = Session()
    reopened.load_plan(load_plan(path), path)
    assert reopened.probes == session.probes
    assert [n.name for n in reopened.nerves] == [n.name for n in session.nerves]
    assert reopened.snapshot_times() == (30.0, 60.0, 90.0)


def test_trajectory_warnings_name_the_problem():
    session = Session()
    session.load_demo("intercostal")
    clear = session.add_probe("n2o-14g", DEMO_TIP, DEMO_ENTRY)
    # Straight through the rib above the nerve, from far outside the body.
    through = session.add_probe("n2o-14g", (-82.0, 81.0, -147.0), (-82.0, 160.0, -147.0))
    assert not any("bone" in w for w in session.probe_warnings(clear))
    assert any("bone" in w for w in session.probe_warnings(through))


def test_protocol_needs_a_freeze_and_positive_durations():
    session = Session()
    with pytest.raises(InputError, match="freeze"):
        session.set_protocol([("passive_thaw", 60)])
    with pytest.raises(InputError, match="duration"):
        session.set_protocol([("freeze", -1)])
    with pytest.raises(InputError, match="kind"):
        session.set_protocol([("boil", 10)])


def test_a_plan_with_an_image_file_is_saved_relative_to_the_plan(tmp_path):
    from planner.demo import build_demo_case
    from planner.imaging.formats import write_volume

    case = build_demo_case("intercostal", spacing_mm=2.0)
    (tmp_path / "images").mkdir()
    image = write_volume(case.ct, tmp_path / "images" / "ct.nii.gz")
    session = Session()
    session.load_volume_file(image)
    session.add_probe("n2o-16g", DEMO_TIP, DEMO_ENTRY)
    plan = session.to_plan(plan_folder=tmp_path / "plans")
    assert plan.volume.path == "../images/ct.nii.gz"
    assert plan.tissue.source == "ct_hu"


# ---------------------------------------------------------------- solver worker
def test_solver_worker_reports_progress_and_cancels_without_blocking():
    from planner.plan import plan_to_json
    from web.freeze import SolverWorker

    session = Session()
    session.load_demo("intercostal")
    session.add_probe("n2o-14g", DEMO_TIP, DEMO_ENTRY)
    session.set_protocol([("freeze", 30)])
    worker = SolverWorker()
    try:
        job = worker.submit(plan_to_json(session.to_plan()), session.labels, spacing_mm=1.5)
        with pytest.raises(RuntimeError, match="already running"):
            worker.submit("{}", None, spacing_mm=None)
        messages = worker.wait(timeout_s=300)
        kinds = [m[0] for m in messages]
        assert kinds[-3:] == ["result", "metrics", "done"], messages[-1]
        assert "progress" in kinds and all(m[1] == job for m in messages)
        result, metrics = messages[-3][2], messages[-2][2]
        assert result.temperatures.min() < -20.0
        # The metrics came with it (computed in the worker): the target nerve is measured.
        assert not isinstance(metrics, str), metrics
        assert metrics.nerves[0].target and metrics.nerves[0].coldest_c < 0.0
        assert any(line.startswith("nerve ") for line in metrics.describe())
        # A long run is cancelled on request.
        session.set_protocol([("freeze", 600), ("passive_thaw", 600), ("freeze", 600)])
        worker.submit(plan_to_json(session.to_plan()), session.labels, spacing_mm=0.5)
        first = []
        while not first:
            first = [m for m in worker.poll() if m[0] == "progress"]
        worker.cancel()
        assert worker.wait(timeout_s=120)[-1][0] == "cancelled"
    finally:
        worker.close()


def test_preview_worker_returns_an_approximate_ice_ball_around_the_probe():
    from planner.plan import plan_to_json
    from planner.scene.slices import sample_temperature
    from web.freeze import SolverWorker

    session = Session()
    session.load_demo("intercostal")
    session.add_probe("n2o-14g", DEMO_TIP, DEMO_ENTRY)
    session.set_protocol([("freeze", 60)])
    worker = SolverWorker()
    try:
        worker.submit(plan_to_json(session.to_plan()), session.labels, kind="preview", vessels=session.vessels)
        messages = worker.wait(timeout_s=300)
        kinds = [m[0] for m in messages]
        assert kinds[-3:] == ["result", "metrics", "done"], messages[-1]
        preview = messages[-3][2]
        assert preview.approximate and "APPROXIMATE" in preview.caveat.upper()
        probe = session.placed_probes()[0]
        axis = np.subtract(probe.entry, probe.tip) / np.linalg.norm(np.subtract(probe.entry, probe.tip))
        middle = np.asarray(probe.tip) + axis * (probe.tip_offset_mm + probe.active_length_mm / 2)
        # Cold beside the active segment, body temperature 30 mm away.
        assert sample_temperature(preview, middle[None], snapshot="min")[0] < -20.0
        assert sample_temperature(preview, (middle + [30.0, 0, 0])[None], snapshot="min")[0] > 36.0
        # What the views draw for this plan is the preview until a full result exists.
        session.preview, session.preview_key = preview, session.plan_key()
        shown, is_preview, _ = session.shown_result()
        assert shown is preview and is_preview
        session.nudge_probe(0, (1.0, 0.0, 0.0))  # moved: the preview no longer matches
        assert session.shown_result()[0] is None
    finally:
        worker.close()


def test_exported_files_are_served_only_from_the_exports_folder(tmp_path):
    folders = DataFolders.from_paths([tmp_path])
    report = folders.export_folder() / "plan" / "report.html"
    report.parent.mkdir()
    report.write_text("<html></html>")
    (folders.export_folder() / "plan" / "metrics.json").write_text("{}")
    (tmp_path / "secret.json").write_text("{}")
    assert folders.export_file("plan/report.html") == report.resolve()
    for bad in ("../secret.json", "/etc/passwd", "plan", "plan/missing.png"):
        with pytest.raises(InputError):
            folders.export_file(bad)
    # Export outputs are not offered as plans to open.
    assert [item["value"] for item in folders.listing()] == ["0:secret.json"]


def test_a_click_on_a_letterboxed_slice_maps_to_the_pixel_under_it():
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from web.views import Views

    session = Session()
    session.load_demo("intercostal")
    views = Views(session, window_size=(64, 48))
    plane = views.plane("axial")
    rows, cols = plane.shape
    # The picture shown 2x its size, in an element 100 px taller than that (bands above and below).
    width, height = 2 * cols, 2 * rows + 100
    for row, col in ((0.25 * rows, 0.75 * cols), (rows / 2, cols / 2)):
        x, y = 2 * (col + 0.5), 50 + 2 * (row + 0.5)
        got = views.click_to_world("axial", x, y, width, height, natural_width_px=cols, natural_height_px=rows)
        np.testing.assert_allclose(got, plane.pixel_to_world(row, col), atol=1e-6)
    # In the band above the picture: no point. Without the picture's size: stretched mapping.
    assert views.click_to_world("axial", cols, 20, width, height, natural_width_px=cols, natural_height_px=rows) is None
    stretched = views.click_to_world("axial", cols, height / 2, width, height)
    np.testing.assert_allclose(stretched, plane.pixel_to_world(rows / 2 - 0.5, cols / 2 - 0.5), atol=1e-6)
