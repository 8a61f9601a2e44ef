"""Solver-level data types: validation and the enthalpy-temperature relation."""

import numpy as np
import pytest

from planner.errors import InputError
from planner.thermal import PlacedProbe, ProbeBoundary, ProtocolStep, TissueProperties, generic_soft_tissue
from planner.thermal.protocol import validate_protocol


def make_tissue(**overrides):
    values = dict(
        name="muscle",
        conductivity_unfrozen=0.49,
        conductivity_frozen=2.0,
        heat_capacity_unfrozen=3.7e6,
        heat_capacity_frozen=1.9e6,
        latent_heat=270e6,
    )
    values.update(overrides)
    return TissueProperties(**values)


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("conductivity_unfrozen", 0.0),
        ("conductivity_frozen", -1.0),
        ("heat_capacity_unfrozen", 0.0),
        ("heat_capacity_frozen", float("nan")),
        ("latent_heat", -1.0),
        ("perfusion", -0.001),
    ],
)
def test_non_physical_tissue_is_refused_naming_the_field(field_name, value):
    with pytest.raises(InputError, match=field_name):
        make_tissue(**{field_name: value})


def test_solidus_above_liquidus_is_refused():
    with pytest.raises(InputError, match="solidus"):
        make_tissue(solidus=0.0, liquidus=-1.0)


@pytest.mark.parametrize("liquidus, solidus", [(-1.0, -8.0), (0.0, 0.0), (0.5, -0.5)])
def test_enthalpy_and_temperature_are_inverse(liquidus, solidus):
    tissue = make_tissue(liquidus=liquidus, solidus=solidus)
    temperatures = np.linspace(-196.0, 45.0, 2411)
    assert np.allclose(tissue.temperature(tissue.enthalpy(temperatures)), temperatures, atol=1e-9)


def test_enthalpy_jump_across_the_mushy_zone_is_latent_plus_sensible_heat():
    tissue = make_tissue()
    jump = tissue.enthalpy(tissue.liquidus) - tissue.enthalpy(tissue.solidus)
    sensible = 0.5 * (3.7e6 + 1.9e6) * 7.0
    assert jump == pytest.approx(270e6 + sensible)


def test_sharp_front_takes_all_latent_heat_at_one_temperature():
    tissue = make_tissue(liquidus=0.0, solidus=0.0)
    enthalpies = np.linspace(1.0, tissue.latent_heat - 1.0, 7)
    assert np.all(tissue.temperature(enthalpies) == 0.0)


def test_frozen_conductivity_rises_as_ice_gets_colder():
    tissue = make_tissue()
    assert tissue.conductivity(-100.0) == pytest.approx(2.0 * 273.15 / 173.15)
    assert tissue.conductivity(20.0) == pytest.approx(0.49)
    constant = make_tissue(frozen_conductivity_varies=False)
    assert constant.conductivity(-100.0) == pytest.approx(2.0)
    mid = 0.5 * (tissue.liquidus + tissue.solidus)
    assert tissue.unfrozen_fraction(mid) == pytest.approx(0.5)


def test_generic_soft_tissue_matches_physics_numbers():
    tissue = generic_soft_tissue(perfusion=0.0005)
    assert tissue.conductivity_frozen / tissue.heat_capacity_frozen == pytest.approx(1.111e-6, rel=1e-3)
    assert tissue.conductivity_unfrozen / tissue.heat_capacity_unfrozen == pytest.approx(1.389e-7, rel=1e-3)
    delta = np.sqrt(tissue.conductivity_unfrozen / tissue.perfusion_coefficient)
    assert delta * 1e3 == pytest.approx(15.8, abs=0.05)


def test_probe_boundary_needs_the_fields_of_its_kind():
    with pytest.raises(InputError, match="freeze_temperature"):
        ProbeBoundary("temperature")
    with pytest.raises(InputError, match="heat_flux_per_length"):
        ProbeBoundary("heat_flux")
    with pytest.raises(InputError, match="coolant_temperature"):
        ProbeBoundary("convective", heat_transfer_coefficient=1000.0)
    with pytest.raises(InputError, match="kind"):
        ProbeBoundary("laser")


def test_placed_probe_geometry_and_validation():
    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0)
    probe = PlacedProbe("p", (0, 0, 0), (0, 0, 10), 1.65, 7.0, boundary, tip_offset_mm=2.0)
    start, end = probe.active_segment()
    assert np.allclose(start, [0, 0, 2]) and np.allclose(end, [0, 0, 9])
    with pytest.raises(InputError, match="entry"):
        PlacedProbe("p", (1, 1, 1), (1, 1, 1), 1.65, 7.0, boundary)
    with pytest.raises(InputError, match="diameter_mm"):
        PlacedProbe("p", (0, 0, 0), (0, 0, 1), 0.0, 7.0, boundary)


def test_protocol_validation():
    with pytest.raises(InputError, match="duration"):
        ProtocolStep("freeze", 0.0)
    with pytest.raises(InputError, match="kind"):
        ProtocolStep("boil", 10.0)
    with pytest.raises(InputError, match="at least one step"):
        validate_protocol([], 1)
    with pytest.raises(InputError, match=r"protocol\[1\]\.probes"):
        validate_protocol([ProtocolStep("freeze", 10.0), ProtocolStep("freeze", 10.0, probes=(2,))], 2)
