"""Property tests of the plan file: random valid edits always load back exactly as saved, and
random invalid documents only ever raise InputError."""

import copy
import dataclasses
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_probes
from planner.errors import InputError
from planner.plan import (
    CustomProbe,
    GridSpec,
    Plan,
    PlanNerve,
    PlanProbe,
    PlanStep,
    load_plan,
    plan_from_dict,
    plan_from_json,
    plan_to_dict,
    save_plan,
)
from planner.thermal.probes import ProbeBoundary

PLANS = Path(__file__).resolve().parent.parent / "data" / "plans"
BASE_PLAN = load_plan(PLANS / "muscle_two_16g.json")
BASE_DICT = json.loads((PLANS / "muscle_two_16g.json").read_text())
MODELS = sorted(load_probes())

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies for valid plans
coordinate = st.floats(min_value=-500, max_value=500, allow_nan=False, allow_infinity=False)
point = st.tuples(coordinate, coordinate, coordinate)
names = st.text(min_size=1, max_size=12).filter(lambda s: s.strip())
positive = st.floats(min_value=0.01, max_value=100, allow_nan=False)
temperature = st.floats(min_value=-270, max_value=36.9, allow_nan=False)


@st.composite
def shaft(draw):
    """A (tip, entry) pair at least 1 mm apart."""
    tip = draw(point)
    direction = draw(st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0, 0.8), (-1, 0, 0)]))
    length = draw(st.floats(min_value=1, max_value=200))
    entry = tuple(t + length * d for t, d in zip(tip, direction))
    return tip, entry


boundaries = st.one_of(
    st.builds(ProbeBoundary, kind=st.just("temperature"), freeze_temperature=temperature,
              cooldown_time=st.floats(min_value=0, max_value=60)),
    st.builds(ProbeBoundary, kind=st.just("heat_flux"), heat_flux_per_length=st.floats(min_value=0, max_value=2000)),
    st.builds(ProbeBoundary, kind=st.just("convective"), heat_transfer_coefficient=positive,
              coolant_temperature=temperature),
)


@st.composite
def probe(draw, name):
    tip, entry = draw(shaft())
    if draw(st.booleans()):
        return PlanProbe(name, draw(st.sampled_from(MODELS)), tip, entry)
    custom = CustomProbe(draw(positive), draw(positive), draw(boundaries), draw(st.floats(min_value=0, max_value=10)))
    return PlanProbe(name, "custom", tip, entry, custom)


@st.composite
def protocol(draw, probe_names):
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["freeze", "passive_thaw", "active_thaw"]))
        references = None
        if draw(st.booleans()):
            chosen = draw(st.lists(st.integers(0, len(probe_names) - 1), min_size=1, max_size=3))
            references = tuple(i if draw(st.booleans()) else probe_names[i] for i in chosen)
        thaw = draw(st.floats(min_value=-20, max_value=60)) if draw(st.booleans()) else 20.0
        steps.append(PlanStep(kind, draw(st.floats(min_value=0.5, max_value=2000)), references, thaw))
    return tuple(steps)


nerves = st.lists(
    st.builds(PlanNerve, name=names, points=st.lists(point, min_size=2, max_size=5).map(tuple), radius_mm=positive,
              target=st.booleans()),
    max_size=3,
).map(tuple)


def without_probe(plan: Plan, index: int) -> Plan:
    """``plan`` minus probe ``index``, with protocol references kept valid."""
    removed = plan.probes[index].name
    probes = plan.probes[:index] + plan.probes[index + 1:]
    steps = []
    for step in plan.protocol:
        references = step.probes
        if references is not None:
            kept = []
            for ref in references:
                if ref == index or ref == removed:
                    continue
                kept.append(ref - 1 if isinstance(ref, int) and ref > index else ref)
            references = tuple(kept) or None
        steps.append(dataclasses.replace(step, probes=references))
    return dataclasses.replace(plan, probes=probes, protocol=tuple(steps))


@st.composite
def edited_plan(draw):
    """The example plan after a random sequence of edits a user could make."""
    plan = BASE_PLAN
    for _ in range(draw(st.integers(1, 6))):
        edit = draw(st.sampled_from(["add", "move", "delete", "protocol", "nerves", "text", "isotherms", "grid",
                                     "snapshots", "rename"]))
        if edit == "add":
            taken = {p.name for p in plan.probes}
            name = draw(names.filter(lambda n: n not in taken))
            plan = dataclasses.replace(plan, probes=plan.probes + (draw(probe(name)),))
        elif edit == "move":
            i = draw(st.integers(0, len(plan.probes) - 1))
            tip, entry = draw(shaft())
            probes = list(plan.probes)
            probes[i] = dataclasses.replace(probes[i], tip=tip, entry=entry)
            plan = dataclasses.replace(plan, probes=tuple(probes))
        elif edit == "delete" and len(plan.probes) > 1:
            plan = without_probe(plan, draw(st.integers(0, len(plan.probes) - 1)))
        elif edit == "rename":
            i = draw(st.integers(0, len(plan.probes) - 1))
            taken = {p.name for p in plan.probes}
            new = draw(names.filter(lambda n: n not in taken))
            old = plan.probes[i].name
            probes = list(plan.probes)
            probes[i] = dataclasses.replace(probes[i], name=new)
            steps = tuple(
                dataclasses.replace(s, probes=None if s.probes is None else tuple(new if r == old else r for r in s.probes))
                for s in plan.protocol
            )
            plan = dataclasses.replace(plan, probes=tuple(probes), protocol=steps)
        elif edit == "protocol":
            plan = dataclasses.replace(plan, protocol=draw(protocol([p.name for p in plan.probes])), snapshot_times_s=None)
        elif edit == "nerves":
            plan = dataclasses.replace(plan, nerves=draw(nerves))
        elif edit == "text":
            plan = dataclasses.replace(plan, name=draw(names), notes=draw(st.text(max_size=40)),
                                       description=draw(st.text(max_size=40)))
        elif edit == "isotherms":
            levels = draw(st.lists(temperature, min_size=1, max_size=5, unique=True))
            plan = dataclasses.replace(plan, isotherms_c=tuple(levels))
        elif edit == "grid":
            plan = dataclasses.replace(plan, grid=draw(st.none() | st.builds(GridSpec, st.none() | st.floats(0.05, 10))))
        elif edit == "snapshots":
            total = plan.total_duration_s
            fractions = draw(st.lists(st.floats(0, 1), min_size=1, max_size=5, unique=True))
            times = sorted({f * total for f in fractions})
            plan = dataclasses.replace(plan, snapshot_times_s=tuple(times))
    return plan


@SETTINGS
@given(edited_plan())
def test_valid_edits_load_back_exactly_as_saved(plan):
    with tempfile.TemporaryDirectory() as folder:
        path = save_plan(plan, Path(folder) / "plan.json")
        loaded = load_plan(path)
    assert loaded == plan
    # Saving again writes the same document: nothing drifts across save/load cycles.
    assert plan_to_dict(loaded) == plan_to_dict(plan)


# ------------------------------------------------------------------ invalid documents
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def must_load_or_refuse(data):
    try:
        plan = plan_from_dict(data)
    except InputError:
        return
    # Whatever loads is a proper plan that survives a round trip.
    assert plan_from_dict(plan_to_dict(plan)) == plan


@SETTINGS
@given(json_values)
def test_random_json_values_only_raise_input_error(data):
    must_load_or_refuse(data)


def paths_of(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths_of(child, prefix + (index,))


BASE_PATHS = list(paths_of(BASE_DICT))[1:]


@st.composite
def mutated_plan_dict(draw):
    """The example plan with a few values replaced, removed, or added at random."""
    data = copy.deepcopy(BASE_DICT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(BASE_PATHS))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(json_values)
            elif isinstance(parent, list):
                parent.append(draw(json_values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return data


@SETTINGS
@given(mutated_plan_dict())
def test_mutated_plans_only_raise_input_error(data):
    must_load_or_refuse(data)
    try:
        text = json.dumps(data)
    except (ValueError, TypeError):
        return
    try:
        plan_from_json(text)
    except InputError:
        pass


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_only_raises_input_error(text):
    try:
        plan_from_json(text)
    except InputError:
        pass


def test_mutations_reach_deep_fields():
    # The mutation strategy must be able to hit nested values, not only top-level keys.
    assert ("probes", 1, "tip", 2) in BASE_PATHS
    assert ("tissue", "class") in BASE_PATHS
    assert any(len(p) >= 4 and p[0] == "nerves" for p in BASE_PATHS)
    assert math.isfinite(BASE_PLAN.total_duration_s)
