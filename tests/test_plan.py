"""The plan file: round trips, every validation error with its JSON path, migration, atomic save,
and conversion to the solver's probe and protocol types."""

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from planner.errors import InputError
from planner.plan import (
    MIGRATIONS,
    SCHEMA_VERSION,
    CustomProbe,
    DemoVolume,
    GridSpec,
    Plan,
    PlanNerve,
    PlanProbe,
    PlanStep,
    PlanValidationError,
    TissueSpec,
    VolumeFile,
    file_problems,
    geometry_problems,
    load_plan,
    placed_probes,
    plan_from_dict,
    plan_from_json,
    plan_sha256,
    plan_to_dict,
    plan_to_json,
    protocol_steps,
    save_plan,
    snapshot_times,
    volume_sha256,
)
from planner.thermal.probes import PlacedProbe, ProbeBoundary
from planner.thermal.protocol import ProtocolStep
from planner.volume import Volume, affine_from_geometry

PLANS = Path(__file__).resolve().parent.parent / "data" / "plans"
EXAMPLES = sorted(PLANS.glob("*.json"))
HOMOGENEOUS_EXAMPLE = PLANS / "muscle_two_16g.json"


@pytest.fixture
def base():
    """The two-probe muscle example as a plain dict, to break in each test."""
    return json.loads(HOMOGENEOUS_EXAMPLE.read_text())


def problems_of(data):
    with pytest.raises(PlanValidationError) as caught:
        plan_from_dict(data)
    return caught.value.problems


# ------------------------------------------------------------------ examples and round trips
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_plans_load_and_round_trip(path, tmp_path):
    plan = load_plan(path)
    assert plan_from_dict(plan_to_dict(plan)) == plan
    copy_path = save_plan(plan, tmp_path / path.name)
    assert load_plan(copy_path) == plan
    # Saving the loaded plan writes the file's content back (the examples are canonical).
    assert json.loads(copy_path.read_text()) == json.loads(path.read_text())


def test_example_contents_are_what_the_docs_say():
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    assert plan.name == "Two 16 G N2O probes in muscle"
    assert plan.tissue == TissueSpec("homogeneous", "muscle")
    assert [p.model for p in plan.probes] == ["n2o-16g", "n2o-16g"]
    assert np.linalg.norm(np.subtract(plan.probes[0].tip, plan.probes[1].tip)) == pytest.approx(6.0)
    assert [(s.kind, s.duration_s) for s in plan.protocol] == [
        ("freeze", 120.0),
        ("passive_thaw", 60.0),
        ("freeze", 120.0),
    ]
    argon = load_plan(PLANS / "argon_three_probes.json")
    assert len(argon.probes) == 3 and {p.model for p in argon.probes} == {"argon-17g"}
    tips = np.array([p.tip for p in argon.probes])
    sides = [np.linalg.norm(tips[i] - tips[(i + 1) % 3]) for i in range(3)]
    np.testing.assert_allclose(sides, 15.0, atol=0.01)


def test_custom_probe_and_every_optional_field_round_trip(tmp_path):
    plan = Plan(
        name="Ünïcode plan ❄",
        description="line one\nline two",
        notes="∂T/∂t",
        volume=VolumeFile("images/ct.nii.gz", "a" * 64, series_uid="1.2.3.4"),
        tissue=TissueSpec("ct_hu", overrides={"muscle": {"perfusion": 0.001, "frozen_conductivity_varies": False}}),
        probes=(
            PlanProbe("A", "n2o-14g", (1.5, -2.25, 3.0), (1.5, -2.25, 43.0)),
            PlanProbe(
                "custom one",
                "custom",
                (0.0, 0.0, 0.0),
                (0.0, 30.0, 0.0),
                CustomProbe(1.2, 8.0, ProbeBoundary("heat_flux", heat_flux_per_length=500.0), tip_offset_mm=0.5),
            ),
        ),
        protocol=(
            PlanStep("freeze", 90.0, probes=("A", 1)),
            PlanStep("passive_thaw", 30.0, thaw_temperature_c=25.0),
            PlanStep("active_thaw", 20.0, probes=(0,), thaw_temperature_c=35.0),
        ),
        nerves=(PlanNerve("T5", ((0, 1, 2), (3, 4, 5), (6, 7, 8.5)), 0.8, target=False),),
        isotherms_c=(0.0, -10.0, -20.0, -40.0),
        snapshot_times_s=(10.0, 60.0, 140.0),
        grid=GridSpec(0.25),
    )
    path = save_plan(plan, tmp_path / "plan.json")
    # The volume file does not exist: loading without file checks round-trips exactly.
    assert load_plan(path, check_files=False) == plan
    text = path.read_text(encoding="utf-8")
    assert "Ünïcode plan ❄" in text  # written as UTF-8, not \u escapes
    assert plan_sha256(load_plan(path, check_files=False)) == plan_sha256(plan)


def test_plan_json_is_readable_and_strict():
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    text = plan_to_json(plan)
    assert '"tip": [-3.0, 0.0, 0.0],' in text  # points stay on one line
    assert plan_from_json(text) == plan
    assert json.loads(text) == plan_to_dict(plan)
    with pytest.raises(ValueError):
        plan_to_json(Plan(**{**plan.__dict__, "isotherms_c": (float("nan"),)}))


def test_plan_hash_changes_with_content():
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    moved = Plan(**{**plan.__dict__, "notes": plan.notes + " "})
    assert plan_sha256(plan) != plan_sha256(moved)
    assert len(plan_sha256(plan)) == 64


# ------------------------------------------------------------------ validation: one path per problem
CASES = [
    # (edit, expected problem text)
    (lambda d: d.pop("name"), "name: missing"),
    (lambda d: d.update(name="  "), "name: must not be empty"),
    (lambda d: d.update(colour="red"), "colour: unknown field"),
    (lambda d: d.update(notes=5), "notes: expected a string, got 5"),
    (lambda d: d.update(volume={"path": "ct.nii.gz"}), "volume.sha256: missing"),
    (lambda d: d.update(volume={"path": "ct.nii.gz", "sha256": "xyz"}), "volume.sha256: expected 64 lower-case hexadecimal digits"),
    (lambda d: d.update(volume={"demo": ""}), "volume.demo: must not be empty"),
    (lambda d: d.update(volume=[1, 2]), "volume: expected an object"),
    (lambda d: d["tissue"].update(source="mri"), "tissue.source: expected one of homogeneous, labels, ct_hu, got 'mri'"),
    (lambda d: d["tissue"].pop("class"), "tissue.class: missing"),
    (lambda d: d["tissue"].update({"class": "liver"}), "tissue.class: unknown tissue 'liver'"),
    (lambda d: d["tissue"].update({"source": "ct_hu", "class": None}), "tissue.source: 'ct_hu' needs a CT volume"),
    (lambda d: d["tissue"].update({"source": "labels"}), "tissue.labels: missing"),
    (lambda d: d["tissue"].update(overrides={"muscle": {"conductivity_frozen": 0}}), "tissue.overrides.muscle.conductivity_frozen: must be > 0 W/m/K, got 0"),
    (lambda d: d["tissue"].update(overrides={"muscle": {"heat_capacity_unfrozen": -3}}), "tissue.overrides.muscle.heat_capacity_unfrozen: must be > 0"),
    (lambda d: d["tissue"].update(overrides={"muscle": {"latent_heat": -1}}), "tissue.overrides.muscle.latent_heat: must be >= 0"),
    (lambda d: d["tissue"].update(overrides={"muscle": {"solidus": 0.0}}), "tissue.overrides.muscle.solidus: must be below liquidus"),
    (lambda d: d["tissue"].update(overrides={"fat": {"perfusion": 0.01}}), "tissue.overrides.fat: the homogeneous block is 'muscle'"),
    (lambda d: d["tissue"].update(overrides={"muscle": {"density": 1}}), "tissue.overrides.muscle.density: unknown field"),
    (lambda d: d.update(probes=[]), "probes: needs at least one probe"),
    (lambda d: d["probes"][1].update(tip=[1, 2]), "probes[1].tip: expected 3 numbers"),
    (lambda d: d["probes"][1].update(tip=[1, "2", 3]), "probes[1].tip: expected 3 numbers [x, y, z] in mm, item 1 is '2'"),
    (lambda d: d["probes"][0].update(entry=[1, 2, float("nan")]), "probes[0].entry: expected 3 numbers [x, y, z] in mm, item 2"),
    (lambda d: d["probes"][0].update(entry=d["probes"][0]["tip"]), "probes[0].entry: same point as the tip"),
    (lambda d: d["probes"][1].update(model="cryo-9000"), "probes[1].model: unknown probe model 'cryo-9000'"),
    (lambda d: d["probes"][1].update(model="custom"), "probes[1].diameter_mm: missing"),
    (lambda d: d["probes"][1].update(model="custom", diameter_mm=1, active_length_mm=5, boundary={"kind": "temperature"}), "probes[1].boundary.freeze_temperature: needed for a 'temperature' boundary"),
    (lambda d: d["probes"][1].update(model="custom", diameter_mm=0, active_length_mm=5, boundary={"kind": "temperature", "freeze_temperature": -80}), "probes[1].diameter_mm: must be > 0 mm"),
    (lambda d: d["probes"][0].update(diameter_mm=2.0), "probes[0].diameter_mm: only for model 'custom'"),
    (lambda d: d["probes"][1].update(name="A"), "probes[1].name: duplicate probe name 'A' (also probes[0])"),
    (lambda d: d["probes"][0].pop("entry"), "probes[0].entry: missing"),
    (lambda d: d["probes"].append("C"), "probes[2]: expected an object"),
    (lambda d: d.update(protocol=[]), "protocol: needs at least one step"),
    (lambda d: d["protocol"][1].update(duration_s=0), "protocol[1].duration_s: must be > 0 s, got 0"),
    (lambda d: d["protocol"][2].update(duration_s=-60), "protocol[2].duration_s: must be > 0 s, got -60"),
    (lambda d: d["protocol"][0].update(kind="melt"), "protocol[0].kind: expected one of freeze, passive_thaw, active_thaw"),
    (lambda d: d["protocol"][0].update(probes=["A", "C"]), "protocol[0].probes[1]: no probe named 'C' (probes: 'A', 'B')"),
    (lambda d: d["protocol"][0].update(probes=[2]), "protocol[0].probes[0]: probe index 2 out of range (the plan has 2 probes)"),
    (lambda d: d["protocol"][0].update(probes=[-1]), "protocol[0].probes[0]: expected a probe index"),
    (lambda d: d["protocol"][0].update(probes=[]), "protocol[0].probes: empty; leave it out to drive all probes"),
    (lambda d: d["protocol"][0].update(thaw_temperature_c="warm"), "protocol[0].thaw_temperature_c: expected a finite number"),
    (lambda d: d["nerves"][0].update(points=[[0, 0, 0]]), "nerves[0].points: a nerve needs at least 2 points, got 1"),
    (lambda d: d["nerves"][0]["points"].append([1, 2]), "nerves[0].points[2]: expected 3 numbers"),
    (lambda d: d["nerves"][0].update(radius_mm=0), "nerves[0].radius_mm: must be > 0 mm"),
    (lambda d: d["nerves"][0].update(target="yes"), "nerves[0].target: expected true or false, got 'yes'"),
    (lambda d: d.update(isotherms_c=[0, 40]), "isotherms_c[1]: must be below body temperature"),
    (lambda d: d.update(isotherms_c=[0, -20, 0]), "isotherms_c: has repeated values"),
    (lambda d: d.update(isotherms_c=[]), "isotherms_c: needs at least one value"),
    (lambda d: d.update(isotherms_c=[-300]), "isotherms_c[0]: must be above absolute zero"),
    (lambda d: d.update(snapshot_times_s=[60, 30]), "snapshot_times_s: must increase strictly"),
    (lambda d: d.update(snapshot_times_s=[60, 400]), "snapshot_times_s[1]: 400 s is after the protocol ends (300 s)"),
    (lambda d: d.update(snapshot_times_s=[-1, 30]), "snapshot_times_s[0]: must be >= 0 s"),
    (lambda d: d.update(grid={"spacing_mm": 0}), "grid.spacing_mm: must be > 0 mm"),
    (lambda d: d.update(grid={"spacing_mm": 50}), "grid.spacing_mm: must be at most 10 mm"),
    (lambda d: d.update(grid={"spacing": 1}), "grid.spacing: unknown field"),
    (lambda d: d.update(format="other"), 'format: expected "cryoplan.plan"'),
    (lambda d: d.update(schema_version=99), "schema_version: the plan was written by a newer cryoplan (schema 99)"),
    (lambda d: d.update(schema_version="1"), "schema_version: expected an integer"),
]


@pytest.mark.parametrize("edit, expected", CASES, ids=[c[1][:50] for c in CASES])
def test_each_problem_is_reported_with_its_json_path(base, edit, expected):
    edit(base)
    problems = problems_of(base)
    assert any(expected in p for p in problems), problems


def test_unknown_demo_case_is_reported(base):
    pytest.importorskip("planner.demo")
    base["volume"] = {"demo": "knee"}
    assert "volume.demo: unknown demo case 'knee' (known: intercostal, lfcn, morton)" in problems_of(base)


def test_label_table_is_checked_and_round_trips(base):
    pytest.importorskip("planner.anatomy.tissues")
    base["volume"] = {"path": "ct.nii.gz", "sha256": "1" * 64}
    base["tissue"] = {"source": "labels", "labels": {"path": "seg.nii.gz", "sha256": "2" * 64, "table": "atlas"}}
    assert any(p.startswith("tissue.labels.table: unknown label table 'atlas' (known: cryoplan") for p in problems_of(base))
    base["tissue"]["labels"]["table"] = "generic"
    plan = plan_from_dict(base)
    assert plan.tissue.labels.table == "generic"
    assert plan_from_dict(plan_to_dict(plan)) == plan


def test_every_problem_is_reported_at_once_in_one_line(base):
    base["probes"][1]["tip"] = [1, 2]
    base["protocol"][1]["duration_s"] = 0
    base["tissue"]["overrides"] = {"muscle": {"conductivity_unfrozen": -1}}
    base["nerves"][0]["radius_mm"] = -1
    with pytest.raises(InputError) as caught:
        plan_from_dict(base, source="case.json")
    message = str(caught.value)
    assert message.startswith("case.json: 4 problems: ")
    for path in ("probes[1].tip", "protocol[1].duration_s", "tissue.overrides.muscle.conductivity_unfrozen", "nerves[0].radius_mm"):
        assert path in message
    assert "\n" not in message


def test_valid_variants_load(base):
    variant = copy.deepcopy(base)
    variant["protocol"][0]["probes"] = ["B", 0, "A"]
    variant["volume"] = {"demo": "intercostal"}
    variant["tissue"] = {"source": "labels"}
    plan = plan_from_dict(variant)
    assert plan.volume == DemoVolume("intercostal")
    assert protocol_steps(plan)[0].probes == (1, 0)
    r98 = copy.deepcopy(base)
    r98["tissue"] = {"source": "homogeneous", "class": "r98", "overrides": {"r98": {"perfusion": 0.0}}}
    assert plan_from_dict(r98).tissue.overrides == {"r98": {"perfusion": 0.0}}
    minimal = {k: base[k] for k in ("format", "schema_version", "name", "tissue", "probes", "protocol")}
    plan = plan_from_dict(minimal)
    assert plan.nerves == () and plan.isotherms_c == (0.0, -20.0, -40.0) and plan.volume is None


# ------------------------------------------------------------------ JSON text and files
@pytest.mark.parametrize(
    "text, expected",
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[1, 2]", "(document): expected a JSON object"),
        ('{"name": "a", "name": "b"}', "duplicate key 'name'"),
        ("1" * 5000, "not a readable JSON plan"),
        ("[" * 100000 + "]" * 100000, "not a readable JSON plan"),
        ("NaN", "(document): expected a JSON object"),
    ],
)
def test_bad_json_text_is_an_input_error(text, expected):
    with pytest.raises(InputError) as caught:
        plan_from_json(text, source="p.json")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("p.json: ")


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such plan file"):
        load_plan(tmp_path / "absent.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(InputError, match="latin.json: not UTF-8 text"):
        load_plan(latin)


def write_volume_plan(tmp_path, base, *, sha=None):
    image = tmp_path / "images" / "ct.bin"
    image.parent.mkdir()
    image.write_bytes(b"pretend image bytes")
    digest = sha or hashlib.sha256(image.read_bytes()).hexdigest()
    base["volume"] = {"path": "images/ct.bin", "sha256": digest}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(base))
    return plan_path, image


def test_volume_path_is_relative_to_the_plan_file_and_hash_checked(tmp_path, base, monkeypatch):
    plan_path, image = write_volume_plan(tmp_path, base)
    monkeypatch.chdir("/")
    plan = load_plan(plan_path)
    assert plan.volume.path == "images/ct.bin"
    assert volume_sha256(image) == plan.volume.sha256


def test_changed_volume_is_reported(tmp_path, base):
    plan_path, image = write_volume_plan(tmp_path, base)
    image.write_bytes(b"another image")
    with pytest.raises(PlanValidationError, match=r"volume\.sha256: .*ct\.bin has changed since the plan was saved"):
        load_plan(plan_path)
    assert load_plan(plan_path, check_files=False).volume.path == "images/ct.bin"


def test_missing_volume_is_reported(tmp_path, base):
    plan_path, image = write_volume_plan(tmp_path, base)
    image.unlink()
    with pytest.raises(PlanValidationError, match=r"volume\.path: not found: .*images/ct\.bin"):
        load_plan(plan_path)


def test_missing_label_map_is_reported(tmp_path, base):
    base["tissue"] = {"source": "labels", "labels": {"path": "labels.nii.gz", "sha256": "0" * 64}}
    plan = plan_from_dict(base)
    problems = file_problems(plan, tmp_path / "plan.json")
    assert problems == [f"tissue.labels.path: not found: {tmp_path / 'labels.nii.gz'}"]


def test_folder_hash_sees_renames_and_changes(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"one")
    (folder / "2.dcm").write_bytes(b"two")
    first = volume_sha256(folder)
    assert volume_sha256(folder) == first
    (folder / "2.dcm").rename(folder / "3.dcm")
    renamed = volume_sha256(folder)
    assert renamed != first
    (folder / "3.dcm").write_bytes(b"Two")
    assert volume_sha256(folder) not in (first, renamed)


def test_probe_tip_outside_the_volume(base):
    plan = plan_from_dict(base)
    volume = Volume(np.zeros((10, 10, 10)), affine_from_geometry((1, 1, 1), (-4.5, -4.5, -4.5)))
    assert geometry_problems(plan, volume) == [
        "nerves[0].points[0]: [-20.0, 2.5, 3.0] mm is outside the volume ([-4.5, -4.5, -4.5] to [4.5, 4.5, 4.5])"
    ]
    far = plan_from_dict({**base, "probes": [{**base["probes"][0], "tip": [0, 0, 30]}, base["probes"][1]], "nerves": []})
    assert geometry_problems(far, volume) == [
        "probes[0].tip: [0.0, 0.0, 30.0] mm is outside the volume ([-4.5, -4.5, -4.5] to [4.5, 4.5, 4.5])"
    ]


# ------------------------------------------------------------------ atomic save
def test_save_refuses_an_invalid_plan_and_writes_nothing(tmp_path):
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    bad = Plan(**{**plan.__dict__, "protocol": (PlanStep("freeze", -5.0),)})
    target = tmp_path / "bad.json"
    with pytest.raises(PlanValidationError, match=r"protocol\[0\]\.duration_s"):
        save_plan(bad, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_crash_during_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    target = save_plan(plan, tmp_path / "plan.json")
    before = target.read_bytes()
    changed = Plan(**{**plan.__dict__, "notes": "changed"})

    def crash(src, dst):
        raise OSError("simulated power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated power cut"):
        save_plan(changed, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert load_plan(target) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left behind
    save_plan(changed, target)
    assert load_plan(target).notes == "changed"


def test_save_writes_through_a_temporary_in_the_same_folder(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_plan(load_plan(HOMOGENEOUS_EXAMPLE), tmp_path / "plan.json")
    [(src, dst)] = calls
    assert src.parent == dst.parent == tmp_path and src != dst


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_plan(load_plan(HOMOGENEOUS_EXAMPLE), tmp_path / "nowhere" / "plan.json")


# ------------------------------------------------------------------ migration
VERSION_0 = {
    "format": "cryoplan.plan",
    "schema_version": 0,
    "title": "Old plan",
    "comment": "from the pre-release editor",
    "tissue": "fat",
    "probes": [
        {"label": "P1", "type": "n2o-14g", "tip_mm": [0, 0, 0], "entry_mm": [0, 0, 30]},
        {"label": "P2", "type": "co2-14g", "tip_mm": [5, 0, 0], "entry_mm": [5, 0, 30]},
    ],
    "cycles": [{"type": "freeze", "seconds": 150}, {"type": "thaw", "seconds": 60}, {"type": "freeze", "seconds": 150}],
    "nerves": [{"name": "n", "points_mm": [[0, 3, -5], [0, 3, 5]], "radius_mm": 1.5}],
    "isotherms": [0, -20],
}


def test_version_0_migrates_to_the_current_schema():
    assert set(MIGRATIONS) == set(range(SCHEMA_VERSION))
    plan = plan_from_dict(copy.deepcopy(VERSION_0))
    assert plan.name == "Old plan"
    assert plan.notes == "from the pre-release editor"
    assert plan.tissue == TissueSpec("homogeneous", "fat")
    assert [(p.name, p.model, p.tip, p.entry) for p in plan.probes] == [
        ("P1", "n2o-14g", (0.0, 0.0, 0.0), (0.0, 0.0, 30.0)),
        ("P2", "co2-14g", (5.0, 0.0, 0.0), (5.0, 0.0, 30.0)),
    ]
    assert [(s.kind, s.duration_s) for s in plan.protocol] == [
        ("freeze", 150.0),
        ("passive_thaw", 60.0),
        ("freeze", 150.0),
    ]
    assert plan.nerves == (PlanNerve("n", ((0.0, 3.0, -5.0), (0.0, 3.0, 5.0)), 1.5, True),)
    assert plan.isotherms_c == (0.0, -20.0)
    assert plan_to_dict(plan)["schema_version"] == SCHEMA_VERSION


def test_version_0_problems_are_reported_in_current_paths():
    old = copy.deepcopy(VERSION_0)
    old["cycles"][1]["seconds"] = 0
    old["probes"][0]["type"] = "unknown"
    problems = problems_of(old)
    assert "protocol[1].duration_s: must be > 0 s, got 0" in problems
    assert any(p.startswith("probes[0].model: unknown probe model 'unknown'") for p in problems)


def test_migration_does_not_touch_the_callers_dict():
    old = copy.deepcopy(VERSION_0)
    plan_from_dict(old)
    assert old == VERSION_0


# ------------------------------------------------------------------ for the solver
def test_probes_convert_with_catalogue_numbers():
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    placed = placed_probes(plan)
    assert all(isinstance(p, PlacedProbe) for p in placed)
    assert [p.name for p in placed] == ["A", "B"]
    assert placed[0].tip == (-3.0, 0.0, 0.0) and placed[0].entry == (-3.0, 0.0, 40.0)
    assert placed[0].diameter_mm == 1.65
    assert placed[0].boundary == ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=5.0)


def test_custom_probe_converts_with_its_own_numbers(base):
    base["probes"][1] = {
        "name": "X",
        "model": "custom",
        "tip": [0, 0, 0],
        "entry": [0, 0, 10],
        "diameter_mm": 3.0,
        "active_length_mm": 12.0,
        "boundary": {"kind": "convective", "heat_transfer_coefficient": 800, "coolant_temperature": -150},
    }
    probe = placed_probes(plan_from_dict(base))[1]
    assert (probe.diameter_mm, probe.active_length_mm, probe.tip_offset_mm) == (3.0, 12.0, 0.0)
    assert probe.boundary == ProbeBoundary("convective", heat_transfer_coefficient=800.0, coolant_temperature=-150.0)


def test_protocol_converts_names_to_indices(base):
    base["protocol"] = [
        {"kind": "freeze", "duration_s": 60, "probes": ["B"]},
        {"kind": "active_thaw", "duration_s": 20, "probes": [0, "A"], "thaw_temperature_c": 30},
        {"kind": "passive_thaw", "duration_s": 40},
    ]
    base["nerves"] = []
    steps = protocol_steps(plan_from_dict(base))
    assert steps == (
        ProtocolStep("freeze", 60.0, (1,), 20.0),
        ProtocolStep("active_thaw", 20.0, (0,), 30.0),
        ProtocolStep("passive_thaw", 40.0, None, 20.0),
    )


def test_snapshot_times_default_to_the_end_of_each_step(base):
    assert snapshot_times(plan_from_dict(base)) == (120.0, 180.0, 300.0)
    base["snapshot_times_s"] = [0, 45.5, 300]
    assert snapshot_times(plan_from_dict(base)) == (0.0, 45.5, 300.0)


def test_saved_plans_get_ordinary_permissions_and_keep_existing_ones(tmp_path):
    plan = load_plan(HOMOGENEOUS_EXAMPLE)
    umask = os.umask(0o022)
    try:
        fresh = save_plan(plan, tmp_path / "fresh.json")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
        fresh.chmod(0o640)
        save_plan(plan, fresh)
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
