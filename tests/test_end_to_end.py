"""End to end: the intercostal case from the library, simulated on a coarse grid, measured.

The full-resolution answer takes minutes on a small machine; a 1 mm grid keeps this test
under a minute and still resolves the ice ball (the probe is 2.1 mm across). The expected
ranges are wide enough for that grid and narrow enough to catch a broken link in the chain
(case -> plan -> demo anatomy -> tissue map -> solver -> metrics).
"""

import json

import pytest

from planner.cases import load_case
from planner.metrics import AXONOTMESIS_C, ICE_EDGE_C, compute_metrics
from planner.simulation import run_plan


@pytest.fixture(scope="module")
def measured():
    plan, path = load_case("intercostal_t7")
    run = run_plan(plan, plan_path=path, spacing_mm=1.0)
    return plan, run, compute_metrics(run)


def test_the_intercostal_case_freezes_its_nerve_and_spares_the_skin(measured):
    plan, run, metrics = measured
    assert [n.name for n in metrics.targets] == ["intercostal_nerve_T7"] == [n.name for n in metrics.nerves[:1]]
    target = metrics.nerve("intercostal_nerve_T7")
    assert target.target and target.length_mm == pytest.approx(20.0, abs=0.5)
    # Some of the nerve's whole cross-section went below -20 degC, and more of it froze.
    assert target.covered_mm[AXONOTMESIS_C] > 0.0
    assert target.covered_mm[ICE_EDGE_C] > max(5.0, target.covered_mm[AXONOTMESIS_C])
    assert target.longest_mm[AXONOTMESIS_C] > 0.0
    assert target.time_below_s is not None and target.time_below_s.max() > 30.0
    assert -76.0 < target.coldest_c < AXONOTMESIS_C  # never colder than the probe (-75 degC)
    # The neighbouring nerves stay unfrozen.
    for name in ("intercostal_nerve_T6", "intercostal_nerve_T8"):
        spare = metrics.nerve(name)
        assert not spare.target and spare.covered_mm[ICE_EDGE_C] == 0.0
    # No ice near the skin: the nerve lies about 30 mm deep.
    assert metrics.skin is not None and not metrics.skin.reached
    assert metrics.skin.clearance_mm is None or metrics.skin.clearance_mm > 10.0
    assert metrics.skin.coldest_c > 30.0
    codes = {w.code for w in metrics.warnings}
    assert not codes & {"skin_frozen", "skin_near_ice", "spared_nerve_frozen", "target_not_reached", "no_ice"}
    # The rib above and the pleura below are close: the metrics report how close.
    assert metrics.structure("bone").clearance_mm < 3.0
    assert metrics.structure("lung").clearance_mm < 3.0
    # The vessels come from the demo case, by name.
    assert metrics.structure("intercostal_artery_7").kind == "vessel"
    # A 14 G N2O probe, two 150 s freezes: an ice ball of about a millilitre.
    volumes = {v["level_c"]: v["volume_ml"] for v in metrics.isotherm_volumes_ml}
    assert 0.5 < volumes[ICE_EDGE_C] < 3.0
    assert 0.0 < volumes[-40.0] < volumes[AXONOTMESIS_C] < volumes[ICE_EDGE_C]
    # Everything is JSON and words.
    json.dumps(metrics.to_dict(per_point=True), allow_nan=False)
    assert any(line.startswith("nerve intercostal_nerve_T7 (target") for line in metrics.describe())
    assert run.plan is plan
