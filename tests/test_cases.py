"""The case library in data/cases: listing, loading, availability, and that each ready plan
is sane on its anatomy (probes on the skin, clear paths, the nerve where the landmarks say)."""

import json
import shutil

import numpy as np
import pytest
from realdata import invesalius_ct_path

from planner.anatomy import Nerve, check_plan_trajectories, distance_to_skin
from planner.cases import CASES_DIR, case_path, cases_table, list_cases, load_case
from planner.demo import build_demo_case
from planner.errors import InputError
from planner.plan import DemoVolume, VolumeFile, load_plan

DEMO_CASES = {"intercostal_t7": "intercostal", "lfcn_asis": "lfcn", "morton_neuroma": "morton"}
HEAD_CASE = "head_supraorbital"


def test_the_library_lists_every_case_with_a_title_and_a_teaching_note():
    cases = list_cases()
    names = [case.name for case in cases]
    assert names == sorted(names)
    assert set(DEMO_CASES) | {HEAD_CASE} <= set(names)
    for case in cases:
        assert case.title and case.path.parent == CASES_DIR
        for part in ("What:", "Why:", "Where to aim:", "What to spare:"):
            assert part in case.note, (case.name, part)
        assert case.target_nerves and case.probes >= 1
        if case.name in DEMO_CASES:
            assert case.available and case.reason == ""
            assert case.anatomy == f"demo: {DEMO_CASES[case.name]}"
    data = json.loads(json.dumps([case.to_dict() for case in cases]))
    assert {item["name"] for item in data} == set(names)
    lines = cases_table(cases)
    assert any(line.startswith("intercostal_t7: ") for line in lines)


@pytest.mark.parametrize("name", sorted(DEMO_CASES))
def test_a_demo_case_loads_and_its_probes_have_clear_paths_from_the_skin(name):
    plan, path = load_case(name)
    assert path == case_path(name) and isinstance(plan.volume, DemoVolume)
    assert plan.volume.demo == DEMO_CASES[name]
    case = build_demo_case(plan.volume.demo)
    warnings = check_plan_trajectories(plan, case.labels)
    blocking = [w for w in warnings if w.code.startswith(("shaft_crosses", "tip_outside", "entry_"))]
    if name == "morton_neuroma":
        # The neuroma is treated from inside: the shaft enters the target nerve and nothing else.
        target = next(n.name for n in plan.nerves if n.target)
        assert [(w.code, w.structure) for w in blocking] == [("shaft_crosses_nerve", target)]
    else:
        assert blocking == []
    for probe in plan.probes:
        assert abs(distance_to_skin(case.labels, probe.entry)) < 1.5
    # The target segment lies on the demo's target nerve, around the case's aiming point.
    target = Nerve.from_plan(next(n for n in plan.nerves if n.target))
    demo_nerve = Nerve.from_plan(case.target_nerve)
    assert np.max(demo_nerve.distance_to(target.centreline)) < 0.5
    aim = case.landmarks["target_nerve_point"]
    assert float(target.distance_to(aim)) < 1.0
    # And each probe's tip is close to it.
    for probe in plan.probes:
        assert float(target.distance_to(np.array(probe.tip))) < 4.0


def test_unknown_case_lists_the_known_ones():
    with pytest.raises(InputError, match="known cases: .*intercostal_t7"):
        load_case("no_such_case")
    assert case_path("intercostal_t7.json").stem == "intercostal_t7"


def test_a_case_whose_image_is_missing_is_listed_as_unavailable(tmp_path):
    data = json.loads((CASES_DIR / f"{HEAD_CASE}.json").read_text())
    data["volume"]["path"] = "/nonexistent/invesalius-examples/Cranium.inv3"
    (tmp_path / "missing_ct.json").write_text(json.dumps(data))
    shutil.copy(CASES_DIR / "lfcn_asis.json", tmp_path / "lfcn_asis.json")
    cases = {case.name: case for case in list_cases(folder=tmp_path)}
    assert cases["lfcn_asis"].available
    missing = cases["missing_ct"]
    assert not missing.available
    assert "not found" in missing.reason and "invesalius-examples" in missing.reason
    with pytest.raises(InputError, match="missing_ct: not available: .*not found"):
        load_case("missing_ct", folder=tmp_path)
    assert any("[unavailable]" in line for line in cases_table(list(cases.values())))


def test_a_broken_case_file_is_named(tmp_path):
    (tmp_path / "broken.json").write_text('{"format": "cryoplan.plan", "schema_version": 1}')
    with pytest.raises(InputError, match="broken.json"):
        list_cases(folder=tmp_path)


def test_the_head_ct_case_points_at_the_installed_ct_and_its_nerve_lies_on_the_frontal_bone():
    ct_path = invesalius_ct_path()  # skips without invesalius-examples (fails with CRYOPLAN_REQUIRE_REALDATA=1)
    plan = load_plan(CASES_DIR / f"{HEAD_CASE}.json", check_files=False)
    assert isinstance(plan.volume, VolumeFile) and plan.volume.path == str(ct_path)
    info = {case.name: case for case in list_cases()}[HEAD_CASE]
    assert info.available, info.reason
    plan, _ = load_case(HEAD_CASE)

    from planner.imaging import read_volume
    from planner.tissue_map import tissue_from_ct

    ct = read_volume(ct_path)
    labels = tissue_from_ct(ct)
    nerve = Nerve.from_plan(plan.nerves[0])
    # Landmark check: every nerve point has cortical bone (> 600 HU) within 2.5 mm, and lies
    # 3-8 mm under the skin, as the supraorbital nerve over the frontal bone does.
    hu = np.asarray(ct.array)
    bone = np.argwhere(hu > 600)
    bone_world = ct.index_to_world(bone[:, ::-1].astype(float))
    for point in nerve.centreline:
        near = bone_world[np.all(np.abs(bone_world - point) < 5.0, axis=1)]
        assert len(near) and np.min(np.linalg.norm(near - point, axis=1)) < 2.5
        assert 3.0 < -distance_to_skin(labels, point) < 8.0
    warnings = check_plan_trajectories(plan, labels)
    assert not [w for w in warnings if w.code.startswith(("shaft_crosses", "tip_outside", "entry_"))], warnings
