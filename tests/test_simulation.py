"""Running a plan: inputs (volume, sha256, tissue map), resampling onto the source geometry,
and an end-to-end run of a tiny homogeneous plan with its written outputs."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from planner.errors import InputError
from planner.labels import Tissue
from planner.plan import PlanValidationError, load_plan, plan_from_dict, plan_sha256, volume_sha256
from planner.simulation import load_plan_volume, plan_tissue_properties, resample_to_volume
from planner.thermal.grid import ThermalGrid
from planner.tissue_map import tissue_from_ct
from planner.volume import Volume, affine_from_geometry

PLANS = Path(__file__).resolve().parent.parent / "data" / "plans"


@pytest.fixture
def base():
    return json.loads((PLANS / "muscle_two_16g.json").read_text())


def tiny_ct() -> Volume:
    """30 x 30 x 20 mm at 1 mm: air around a soft-tissue block with a fat layer and a bone bar."""
    hu = np.full((20, 30, 30), -1000, dtype=np.int16)
    hu[2:18, 3:27, 3:27] = 40
    hu[2:18, 3:27, 3:8] = -100
    hu[8:12, 12:18, 12:27] = 900
    affine = affine_from_geometry((1.0, 1.0, 1.0), (-14.5, -14.5, -9.5))
    return Volume(hu, affine, modality="CT", units="HU")


def write(volume, path):
    from planner.imaging.formats import write_volume

    write_volume(volume, path)
    return path


def ct_plan(tmp_path, base, *, tissue=None):
    ct_path = write(tiny_ct(), tmp_path / "ct.nii.gz")
    data = copy.deepcopy(base)
    data["volume"] = {"path": "ct.nii.gz", "sha256": volume_sha256(ct_path)}
    data["tissue"] = tissue or {"source": "ct_hu"}
    data["probes"][0]["tip"] = [-3.0, 0.0, 0.0]
    data["probes"][1]["tip"] = [3.0, 0.0, 0.0]
    data["nerves"][0]["points"] = [[-10.0, 2.5, 3.0], [10.0, 2.5, 3.0]]
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(data))
    return plan_path


# ------------------------------------------------------------------ inputs
def test_homogeneous_plan_has_no_volume_and_one_tissue(base):
    plan = plan_from_dict(base)
    assert load_plan_volume(plan) == (None, None)
    properties, label = plan_tissue_properties(plan)
    assert label == Tissue.MUSCLE
    assert list(properties) == [int(Tissue.MUSCLE)] and properties[label].name == "muscle"


def test_homogeneous_overrides_and_named_sets(base):
    base["tissue"] = {"source": "homogeneous", "class": "r98", "overrides": {"r98": {"perfusion": 0.002}}}
    properties, label = plan_tissue_properties(plan_from_dict(base))
    assert label == Tissue.SOFT_TISSUE
    assert properties[label].name == "r98" and properties[label].perfusion == 0.002
    assert properties[label].conductivity_frozen == 2.0


def test_ct_plan_loads_the_ct_and_classifies_it(tmp_path, base):
    plan_path = ct_plan(tmp_path, base)
    source, labels = load_plan_volume(load_plan(plan_path), plan_path=plan_path)
    assert source.modality == "CT" and source.array.shape == (20, 30, 30)
    np.testing.assert_allclose(source.affine, tiny_ct().affine, atol=1e-5)
    np.testing.assert_array_equal(labels.array, tissue_from_ct(tiny_ct()).array)
    properties, label = plan_tissue_properties(load_plan(plan_path))
    assert label is None and set(properties) == {int(t) for t in Tissue if t is not Tissue.AIR}


def test_label_map_plan_uses_the_file(tmp_path, base):
    labels = tissue_from_ct(tiny_ct())
    labels_path = write(labels, tmp_path / "labels.nii.gz")
    tissue = {"source": "labels", "labels": {"path": "labels.nii.gz", "sha256": volume_sha256(labels_path)},
              "overrides": {"fat": {"perfusion": 0.0}}}
    plan_path = ct_plan(tmp_path, base, tissue=tissue)
    plan = load_plan(plan_path)
    _, loaded = load_plan_volume(plan, plan_path=plan_path)
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, labels.array)
    properties, _ = plan_tissue_properties(plan)
    assert properties[int(Tissue.FAT)].perfusion == 0.0
    assert properties[int(Tissue.MUSCLE)].perfusion > 0


def test_label_map_with_foreign_values_is_refused(tmp_path, base):
    labels = tissue_from_ct(tiny_ct())
    labels.array[0, 0, 0] = 42
    labels_path = write(labels, tmp_path / "labels.nii.gz")
    tissue = {"source": "labels", "labels": {"path": "labels.nii.gz", "sha256": volume_sha256(labels_path)}}
    plan_path = ct_plan(tmp_path, base, tissue=tissue)
    with pytest.raises(InputError, match=r"tissue\.labels: .*labels\.nii\.gz: label values not in table 'cryoplan': 42"):
        load_plan_volume(load_plan(plan_path), plan_path=plan_path)


def test_partial_segmentation_takes_the_rest_from_the_ct(tmp_path, base):
    # A TotalSegmentator-style map labelling only a "spleen" (1): its background (0) is
    # classified from the plan's CT by HU, so the body outline and skin come from the image.
    partial = Volume(np.zeros((20, 30, 30), np.uint8), tiny_ct().affine, modality="SEG", units="label")
    partial.array[4:8, 5:10, 10:15] = 1
    labels_path = write(partial, tmp_path / "organs.nii.gz")
    tissue = {"source": "labels",
              "labels": {"path": "organs.nii.gz", "sha256": volume_sha256(labels_path), "table": "totalsegmentator-like"}}
    plan_path = ct_plan(tmp_path, base, tissue=tissue)
    plan = load_plan(plan_path)
    assert plan.tissue.labels.table == "totalsegmentator-like"
    _, labels = load_plan_volume(plan, plan_path=plan_path)
    from_ct = tissue_from_ct(tiny_ct()).array
    assert np.all(labels.array[4:8, 5:10, 10:15] == Tissue.SOFT_TISSUE)
    outside = np.ones(from_ct.shape, bool)
    outside[4:8, 5:10, 10:15] = False
    np.testing.assert_array_equal(labels.array[outside], from_ct[outside])


def test_ct_hu_on_an_ultrasound_volume_is_refused(tmp_path, base):
    us = Volume(np.full((20, 30, 30), 80, np.uint8), tiny_ct().affine, modality="US", units="")
    us_path = write(us, tmp_path / "us.nii.gz")
    data = copy.deepcopy(base)
    data["volume"] = {"path": "us.nii.gz", "sha256": volume_sha256(us_path)}
    data["tissue"] = {"source": "ct_hu"}
    data["nerves"] = []
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="tissue.source: 'ct_hu' needs a CT in HU; the volume is US"):
        load_plan_volume(load_plan(plan_path), plan_path=plan_path)


def test_changed_ct_is_refused_before_running(tmp_path, base):
    plan_path = ct_plan(tmp_path, base)
    plan = load_plan(plan_path)
    changed = tiny_ct()
    changed.array[5, 5, 5] = 0
    write(changed, tmp_path / "ct.nii.gz")
    with pytest.raises(PlanValidationError, match=r"volume\.sha256: .*has changed since the plan was saved"):
        load_plan_volume(plan, plan_path=plan_path)


def test_probe_outside_the_ct_is_refused(tmp_path, base):
    plan_path = ct_plan(tmp_path, base)
    data = json.loads(plan_path.read_text())
    data["probes"][1]["tip"] = [3.0, 0.0, 25.0]
    plan_path.write_text(json.dumps(data))
    with pytest.raises(PlanValidationError, match=r"probes\[1\]\.tip: \[3\.0, 0\.0, 25\.0\] mm is outside the volume"):
        load_plan_volume(load_plan(plan_path), plan_path=plan_path)


# ------------------------------------------------------------------ resampling onto the source
def test_resample_to_volume_is_exact_for_linear_fields_and_fills_outside():
    # A rotated, offset grid; a field linear in world position is reproduced exactly by
    # trilinear interpolation wherever the target voxel lies inside the grid's cell centres.
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    grid = ThermalGrid.uniform((12, 14, 16), 0.5, origin=(1.0, -2.0, 0.5), direction=direction, lower=(-4, -3.5, -3))
    centres = grid.local_to_world(grid.cell_centres_local())
    gradient = np.array([0.7, -1.3, 2.0])
    values = (centres @ gradient).astype(np.float32)
    target = Volume(np.zeros((20, 24, 28), np.int16), affine_from_geometry((0.4, 0.45, 0.5), (-5, -8, -4.5)))
    out = resample_to_volume(SimpleNamespace(grid=grid), values, target, fill_value=37.0)
    assert out.array.shape == target.array.shape
    np.testing.assert_array_equal(out.affine, target.affine)
    ni, nj, nk = target.shape_xyz
    ijk = np.stack(np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk), indexing="ij"), -1).reshape(-1, 3)
    world = target.index_to_world(ijk)
    local = grid.world_to_local(world)
    first = np.array([grid.centres(a)[0] for a in range(3)])
    last = np.array([grid.centres(a)[-1] for a in range(3)])
    low, high = grid.bounds_local()
    interior = np.all((local >= first) & (local <= last), axis=1)
    outside = ~np.all((local >= low) & (local <= high), axis=1)
    sampled = out.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    assert interior.sum() > 500 and outside.sum() > 500
    np.testing.assert_allclose(sampled[interior], world[interior] @ gradient, atol=1e-4)
    assert np.all(sampled[outside] == 37.0)


def test_resample_to_volume_far_away_is_all_fill():
    grid = ThermalGrid.uniform((4, 4, 4), 1.0, origin=(100, 100, 100))
    target = Volume(np.zeros((5, 5, 5)), np.eye(4))
    out = resample_to_volume(SimpleNamespace(grid=grid), np.zeros((4, 4, 4)), target)
    assert np.all(out.array == 37.0)


# ------------------------------------------------------------------ end to end (coarse and short)
def short_plan(base, tmp_path=None):
    """The two-probe muscle plan with a 20 s freeze and a 10 s thaw: runs in seconds at 1 mm."""
    data = copy.deepcopy(base)
    data["protocol"] = [{"kind": "freeze", "duration_s": 20.0}, {"kind": "passive_thaw", "duration_s": 10.0}]
    return plan_from_dict(data)


@pytest.fixture(scope="module")
def short_run():
    from planner.simulation import run_plan

    base = json.loads((PLANS / "muscle_two_16g.json").read_text())
    fractions = []
    run = run_plan(short_plan(base), spacing_mm=1.0, progress=fractions.append)
    return run, fractions


def test_run_plan_solves_the_protocol(short_run):
    run, fractions = short_run
    result = run.result
    np.testing.assert_allclose(result.snapshot_times, [20.0, 30.0])
    assert run.source_volume is None and run.labels is None
    assert list(run.properties) == [int(Tissue.MUSCLE)]
    assert result.grid.spacing == pytest.approx(1.0)
    # The probes' surface is held at -75 degC (N2O, 16 G): nothing gets much colder, and
    # after a 20 s freeze the tissue at the probes is close to it.
    coldest = float(result.min_temperature.min())
    assert -77.0 <= coldest <= -60.0
    # Ice volumes nest: colder isotherms enclose less.
    volumes = [result.isotherm_volume_ml(level, 0) for level in (0.0, -20.0, -40.0)]
    assert volumes[0] > volumes[1] > volumes[2] > 0
    # A passive thaw warms the ice.
    assert result.isotherm_volume_ml(-20.0, 1) < volumes[1]
    assert fractions and fractions[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert run.plan_sha256 == plan_sha256(run.plan)


def test_write_outputs_writes_fields_and_summary(short_run, tmp_path):
    from planner.imaging import read_volume
    from planner.simulation import write_outputs

    run, _ = short_run
    summary = write_outputs(run, tmp_path / "out")
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["outputs"]["snapshots"] == ["temperature_000020.0s.vti", "temperature_000030.0s.vti"]
    assert "min_temperature_on_source" not in summary["outputs"]  # no source volume
    assert summary["plan"]["name"] == run.plan.name and summary["plan"]["sha256"] == run.plan_sha256
    assert summary["plan"]["protocol_duration_s"] == 30.0
    assert [s["time_s"] for s in summary["snapshots"]] == [20.0, 30.0]
    assert summary["disclaimer"].startswith("Research and education only")
    assert summary["plan_name"] == run.plan.name and summary["plan_sha256"] == run.plan_sha256
    first = summary["snapshots"][0]["isotherms"]
    assert [iso["level_c"] for iso in first] == [0.0, -20.0, -40.0]
    assert first[1]["volume_ml"] == pytest.approx(run.result.isotherm_volume_ml(-20.0, 0))
    assert [iso["level_c"] for iso in summary["coldest_reached"]] == [0.0, -20.0, -40.0]
    assert summary["coldest_reached"][1]["volume_ml"] >= first[1]["volume_ml"]
    # Two probes 6 mm apart: the 0 degC ball is wider across than the probe spacing, and
    # its largest diameter is at least its width.
    assert first[0]["across_mm"] > 6.0 + 1.65
    assert first[0]["max_diameter_mm"] >= first[0]["across_mm"] - 1e-9
    field = read_volume(out / summary["outputs"]["snapshots"][0])
    expected = run.result.temperature_volume(0)
    np.testing.assert_allclose(field.affine, expected.affine, atol=1e-9)
    np.testing.assert_allclose(field.array, expected.array)
    minimum = read_volume(out / "min_temperature.vti")
    np.testing.assert_allclose(minimum.array, run.result.min_temperature_volume().array)
    assert summary["min_temperature_c"] == pytest.approx(float(run.result.min_temperature.min()))
    assert float(minimum.array.min()) >= summary["min_temperature_c"] - 1e-4
    # The coldest cell sits between the probes' active segments, i.e. near (0..3, 0, 0..6) mm.
    k, j, i = np.unravel_index(np.argmin(minimum.array), minimum.array.shape)
    x, y, z = minimum.index_to_world([i, j, k])
    assert abs(abs(x) - 3.0) <= 1.5 and abs(y) <= 1.5 and -1.0 <= z <= 7.0


def test_run_plan_can_be_cancelled(base):
    from planner.simulation import run_plan
    from planner.thermal.solver import SimulationCancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(SimulationCancelled):
        run_plan(short_plan(base), spacing_mm=1.0, cancel=cancel)


def test_run_plan_refuses_a_bad_spacing(base):
    from planner.simulation import run_plan

    with pytest.raises(InputError, match="spacing_mm: must be a positive number of mm, got -1"):
        run_plan(short_plan(base), spacing_mm=-1)


def test_ct_plan_end_to_end_overlays_on_the_ct(tmp_path, base):
    from planner.imaging import read_volume
    from planner.simulation import run_plan, write_outputs

    plan_path = ct_plan(tmp_path, base)
    data = json.loads(plan_path.read_text())
    data["protocol"] = [{"kind": "freeze", "duration_s": 15.0}]
    plan_path.write_text(json.dumps(data))
    run = run_plan(plan_path, spacing_mm=1.0)
    assert run.plan_path == plan_path and run.source_volume.modality == "CT"
    summary = write_outputs(run, tmp_path / "out")
    assert summary["plan"]["path"] == str(plan_path)
    overlay = read_volume(tmp_path / "out" / summary["outputs"]["min_temperature_on_source"])
    ct = read_volume(tmp_path / "ct.nii.gz")
    assert overlay.array.shape == ct.array.shape
    np.testing.assert_allclose(overlay.affine, ct.affine, atol=1e-5)
    # Cold at the probes' active segments, body temperature in the far corner.
    assert float(overlay.sample([3.0, 0.0, 3.0])) < -40
    assert float(overlay.array[0, 0, 0]) == pytest.approx(37.0, abs=0.5)


def test_demo_example_plan_places_the_probe_at_the_nerve():
    pytest.importorskip("planner.demo")
    plan = load_plan(PLANS / "intercostal_demo.json")
    source, labels = load_plan_volume(plan)
    assert source.modality == "CT" and labels.modality == "SEG"
    tip = np.array(plan.probes[0].tip)
    assert labels.sample(tip, order=0) == Tissue.MUSCLE
    nerve = np.array(plan.nerves[0].points)
    starts, ends = nerve[:-1], nerve[1:]
    along = np.clip(np.einsum("ij,ij->i", tip - starts, ends - starts) / np.sum((ends - starts) ** 2, axis=1), 0, 1)
    distance = np.linalg.norm(starts + along[:, None] * (ends - starts) - tip, axis=1).min()
    # The tip rests against the nerve: centreline about one nerve radius plus a probe radius away.
    assert 1.0 < distance < 2.5
    # The shaft runs from the skin down to the tip.
    assert labels.sample(np.array(plan.probes[0].entry) + 1.0 * (tip - plan.probes[0].entry) / np.linalg.norm(
        tip - plan.probes[0].entry), order=0) in (Tissue.SKIN, Tissue.FAT)
