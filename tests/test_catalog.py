"""The tissue and probe catalogues in data/: every entry loads, is physically sane and cites a
source; broken catalogues fail with the entry and field named."""

import math
import re
import tomllib

import pytest

from planner.catalog import (
    PROBES_PATH,
    TISSUES_PATH,
    get_probe,
    label_for_tissue_key,
    load_probes,
    load_tissues,
    tissue_properties_for_labels,
)
from planner.errors import InputError
from planner.labels import Tissue
from planner.thermal.probes import PlacedProbe, ProbeBoundary
from planner.thermal.properties import TissueProperties

WATER_LATENT_HEAT = 334e3  # J/kg

GAUGE_OUTER_DIAMETER_MM = {"11 G": 3.05, "13 G": 2.41, "14 G": 2.11, "16 G": 1.65, "17 G": 1.47, "27 G": 0.41}


# ------------------------------------------------------------------ tissues
def test_every_tissue_class_but_air_has_properties_and_r98_is_a_set():
    tissues = load_tissues()
    expected = {t.key for t in Tissue if t is not Tissue.AIR} | {"r98"}
    assert set(tissues) == expected
    assert all(isinstance(p, TissueProperties) for p in tissues.values())
    assert all(tissues[key].name == key for key in tissues)


@pytest.mark.parametrize("key", ["skin", "fat", "muscle", "bone", "nerve", "vessel", "soft_tissue", "lung", "r98"])
def test_tissue_is_physically_sane(key):
    p = load_tissues()[key]
    # Unfrozen conductivity: between fat-like (0.2) and water-like (0.6) W/m/K.
    assert 0.15 <= p.conductivity_unfrozen <= 0.6
    # Freezing raises conductivity (ice 2.2 W/m/K versus water 0.6) but not beyond ice.
    assert p.conductivity_unfrozen < p.conductivity_frozen <= 2.22
    # Volumetric heat capacity: freezing lowers it (ice c is about half of water's).
    assert 0.5e6 < p.heat_capacity_frozen < p.heat_capacity_unfrozen <= 4.2e6
    # Latent heat cannot exceed that of pure water (1000 kg/m3 * 334 kJ/kg).
    assert 0 < p.latent_heat <= 1000 * WATER_LATENT_HEAT
    assert p.solidus < p.liquidus <= 0
    assert (p.liquidus, p.solidus) == (-1.0, -8.0)
    assert 0 <= p.perfusion <= 0.2
    assert 3.6e6 <= p.blood_heat_capacity <= 4.0e6
    assert 0 <= p.metabolic_heat <= 4200
    assert len(p.source) > 20


def test_r98_set_matches_the_published_generic_values():
    r98 = load_tissues()["r98"]
    assert (r98.conductivity_unfrozen, r98.conductivity_frozen) == (0.5, 2.0)
    assert (r98.heat_capacity_unfrozen, r98.heat_capacity_frozen) == (3.6e6, 1.8e6)
    assert r98.latent_heat == 300e6
    assert r98.perfusion == 0.0005
    assert r98.frozen_conductivity_varies is False


def test_muscle_values_follow_itis_and_the_water_fraction_rule():
    muscle = load_tissues()["muscle"]
    assert muscle.heat_capacity_unfrozen == pytest.approx(1090 * 3421, rel=1e-3)
    assert muscle.perfusion == pytest.approx(37 * 1090 * 1e-6 / 60, rel=1e-2)
    assert muscle.latent_heat == pytest.approx(270e6, rel=0.03)
    fat, bone = load_tissues()["fat"], load_tissues()["bone"]
    assert 55e6 <= fat.latent_heat <= 80e6 and 55e6 <= bone.latent_heat <= 80e6


def test_unverified_numbers_are_flagged_in_the_source():
    tissues = load_tissues()
    # PHYSICS.md marks skin and nerve properties "(check)": the catalogue must say so.
    for key in ("skin", "nerve"):
        assert "(check)" in tissues[key].source


def test_properties_for_labels_cover_every_label_but_air():
    by_label = tissue_properties_for_labels()
    assert set(by_label) == {int(t) for t in Tissue if t is not Tissue.AIR}
    assert by_label[int(Tissue.MUSCLE)].name == "muscle"
    assert by_label[int(Tissue.LUNG)].name == "lung"


def test_overrides_replace_only_the_named_fields():
    base = tissue_properties_for_labels()[int(Tissue.MUSCLE)]
    changed = tissue_properties_for_labels({"muscle": {"perfusion": 0.002, "frozen_conductivity_varies": False}})
    muscle = changed[int(Tissue.MUSCLE)]
    assert muscle.perfusion == 0.002
    assert muscle.frozen_conductivity_varies is False
    assert muscle.conductivity_unfrozen == base.conductivity_unfrozen
    assert changed[int(Tissue.FAT)] == tissue_properties_for_labels()[int(Tissue.FAT)]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"muscle": {"conductivity_unfrozen": 0}}, r"tissue\.overrides\.muscle\.conductivity_unfrozen: must be > 0"),
        ({"muscle": {"heat_capacity_frozen": -1.0}}, r"tissue\.overrides\.muscle\.heat_capacity_frozen: must be > 0"),
        ({"fat": {"latent_heat": -5.0}}, r"tissue\.overrides\.fat\.latent_heat: must be >= 0"),
        ({"fat": {"perfusion": -0.1}}, r"tissue\.overrides\.fat\.perfusion: must be >= 0"),
        ({"fat": {"solidus": 0.5}}, r"tissue\.overrides\.fat\.solidus: must be below liquidus"),
        ({"fat": {"liquidus": 3.0}}, r"tissue\.overrides\.fat\.liquidus: tissue water freezes at or below 0"),
        ({"fat": {"density": 900}}, r"tissue\.overrides\.fat\.density: unknown field"),
        ({"fat": {"perfusion": "high"}}, r"tissue\.overrides\.fat\.perfusion: expected a finite number"),
        ({"bone": {"conductivity_frozen": math.nan}}, r"tissue\.overrides\.bone\.conductivity_frozen: expected a finite"),
        ({"liver": {"perfusion": 0.01}}, r"tissue\.overrides\.liver: not a tissue class"),
        ({"air": {"perfusion": 0.01}}, r"tissue\.overrides\.air: not a tissue class"),
    ],
)
def test_non_physical_overrides_name_class_and_field(overrides, message):
    with pytest.raises(InputError, match=message):
        tissue_properties_for_labels(overrides)


def test_label_for_tissue_key():
    assert label_for_tissue_key("muscle") == Tissue.MUSCLE
    assert label_for_tissue_key("r98") == Tissue.SOFT_TISSUE


def _write_broken_tissues(tmp_path, edit):
    document = TISSUES_PATH.read_text()
    path = tmp_path / "tissues.toml"
    path.write_text(edit(document))
    return path


def test_broken_tissue_catalogue_lists_every_problem(tmp_path):
    def edit(text):
        text = text.replace("conductivity_unfrozen = 0.49\nconductivity_frozen = 1.81", "conductivity_unfrozen = -0.49\nconductivity_frozen = 1.81", 1)
        text = text.replace('name = "fat"\n', 'name = "fat"\ncolour = "yellow"\n', 1)
        return text

    path = _write_broken_tissues(tmp_path, edit)
    with pytest.raises(InputError) as caught:
        load_tissues(path)
    message = str(caught.value)
    assert str(path) in message
    assert "tissues.muscle.conductivity_unfrozen: must be > 0" in message
    assert "tissues.fat.colour: unknown field" in message
    assert "\n" not in message


def test_tissue_catalogue_missing_a_class_or_field(tmp_path):
    def edit(text):
        start = text.index("[tissues.lung]")
        end = text.index("[sets.r98]")
        text = text[:start] + text[end:]
        return re.sub(r'source = "Generic soft tissue: the R98.*\n', "", text, count=1)

    path = _write_broken_tissues(tmp_path, edit)
    with pytest.raises(InputError, match=r"tissues\.lung: missing.*tissues\.soft_tissue\.source: missing"):
        load_tissues(path)


def test_unreadable_catalogue(tmp_path):
    path = tmp_path / "tissues.toml"
    path.write_text("[tissues.muscle\n")
    with pytest.raises(InputError, match="cannot read catalogue"):
        load_tissues(path)
    with pytest.raises(InputError, match="not found"):
        load_tissues(tmp_path / "absent.toml")


# ------------------------------------------------------------------ probes
def test_catalogue_holds_cryoneurolysis_and_cryoablation_models():
    probes = load_probes()
    uses = {p.use for p in probes.values()}
    assert uses == {"cryoneurolysis", "cryoablation"}
    cryogens = {p.cryogen for p in probes.values()}
    assert {"N2O", "CO2", "argon", "LN2"} <= cryogens
    diameters = sorted(round(p.diameter_mm, 2) for p in probes.values())
    for required in (0.41, 1.47, 1.65, 2.1, 2.11, 2.4):
        assert required in diameters


@pytest.mark.parametrize("name", list(load_probes()))
def test_probe_model_is_sane(name):
    probe = load_probes()[name]
    assert probe.name == name
    assert isinstance(probe.boundary, ProbeBoundary)
    assert probe.gauge in GAUGE_OUTER_DIAMETER_MM
    assert probe.diameter_mm == pytest.approx(GAUGE_OUTER_DIAMETER_MM[probe.gauge], abs=0.06)
    assert 0 < probe.active_length_mm <= 60
    assert probe.tip_offset_mm >= 0
    assert "generic" in probe.maker
    assert len(probe.source) > 30 and "assumption" in probe.source
    boiling_point = {"N2O": -88.5, "CO2": -78.5, "argon": -185.8, "LN2": -195.8}[probe.cryogen]
    if probe.boundary.kind == "temperature":
        # A probe surface cannot be colder than its cryogen boils (sublimes).
        assert boiling_point <= probe.boundary.freeze_temperature < -40
    else:
        assert probe.boundary.coolant_temperature >= boiling_point - 1
    if probe.use == "cryoneurolysis":
        assert probe.cryogen in ("N2O", "CO2")
        assert -89 <= probe.boundary.freeze_temperature <= -70
    if probe.cryogen == "argon":
        assert -150 <= probe.boundary.freeze_temperature <= -140


def test_probe_place_builds_a_placed_probe_with_catalogue_numbers():
    model = get_probe("argon-17g")
    placed = model.place((1, 2, 3), (1, 2, 50), name="A")
    assert isinstance(placed, PlacedProbe)
    assert placed.name == "A"
    assert placed.tip == (1.0, 2.0, 3.0)
    assert placed.diameter_mm == model.diameter_mm == 1.47
    assert placed.tip_offset_mm == model.tip_offset_mm
    assert placed.boundary == model.boundary


def test_unknown_probe_lists_known_names():
    with pytest.raises(InputError, match=r"unknown probe model 'cryo-9000'; known models: n2o-14g, .*argon-17g"):
        get_probe("cryo-9000")


def test_broken_probe_catalogue_lists_every_problem(tmp_path):
    text = PROBES_PATH.read_text()
    text = text.replace("diameter_mm = 2.11", "diameter_mm = -2.11", 1)
    text = text.replace('kind = "temperature"\nfreeze_temperature = -75.0', 'kind = "warm"\nfreeze_temperature = -75.0', 1)
    text = text.replace('use = "cryoablation"', 'use = "biopsy"', 1)
    text = text.replace('name = "co2-14g"', 'name = "n2o-16g"', 1)
    path = tmp_path / "probes.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_probes(path)
    message = str(caught.value)
    assert r"probes[0] (n2o-14g).diameter_mm: must be > 0 mm" in message
    assert "probes[0] (n2o-14g).boundary.kind: expected one of temperature, heat_flux, convective" in message
    assert "probes[4] (argon-17g).use: expected one of cryoneurolysis, cryoablation" in message
    assert "probes[3] (n2o-16g).name: duplicate model name 'n2o-16g'" in message


def test_probe_catalogue_boundary_needs_its_fields(tmp_path):
    text = PROBES_PATH.read_text().replace("coolant_temperature = -196.0\n", "")
    path = tmp_path / "probes.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=r"probes\[7\] \(ln2-3mm\)\.boundary\.coolant_temperature: needed"):
        load_probes(path)


def test_catalogue_files_are_plain_toml_with_schema_version():
    for path in (TISSUES_PATH, PROBES_PATH):
        with open(path, "rb") as stream:
            assert tomllib.load(stream)["schema_version"] == 1
