"""Semantics of ``assess``: exact energies, linearity in intensity, reuse, breakdown sums."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2sim.carbon import Activity, Boundary, CarbonConfig, assess
from m2sim.carbon.config import SECONDS_PER_YEAR
from m2sim.carbon.embodied import cpa_by_node

# The factory fixtures are stateless, so sharing them across hypothesis examples is safe.
FACTORIES = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_constant_power_gpu_energy_is_power_times_time(gpu, host, idle_activity, with_):
    cfg = with_(CarbonConfig(), include_cpu=False, dram_w_per_gb=0.0, ssd_active_w=0.0,
                ssd_idle_w=0.0)
    act = idle_activity(400.0, gpu_busy_compute_s=400.0)  # compute-bound the whole run
    r = assess(act, gpu, host, cfg)
    assert r.energy_by_component_j["gpu"] == 250.0 * 400.0  # tdp_w x runtime, exactly
    assert r.energy_j == 250.0 * 400.0


def test_each_gpu_state_charges_its_own_power(gpu, host, idle_activity):
    act = idle_activity(100.0, gpu_busy_compute_s=10.0, gpu_busy_memory_s=20.0,
                        gpu_wait_io_s=40.0)
    r = assess(act, gpu, host, CarbonConfig())
    # idle 50 W; compute 250 W; memory 50 + 0.5 x 200 = 150 W; wait-I/O 50 + 0.1 x 200 = 70 W
    assert r.energy_by_component_j["gpu"] == pytest.approx(
        50.0 * 30 + 250.0 * 10 + 150.0 * 20 + 70.0 * 40, rel=1e-15)


def test_idle_cpu_and_ssd_energy_is_power_times_time(gpu, host, idle_activity):
    r = assess(idle_activity(3600.0), gpu, host, CarbonConfig())
    assert r.energy_by_component_j["cpu"] == 30.0 * 3600.0
    assert r.energy_by_component_j["ssd"] == 0.5 * 3600.0
    assert r.energy_by_component_j["gpu"] == 50.0 * 3600.0


def test_busy_cores_add_their_share_of_the_cpu_dynamic_power(gpu, host, idle_activity):
    r = assess(idle_activity(10.0, cpu_busy_core_s=20.0), gpu, host, CarbonConfig())
    assert r.energy_by_component_j["cpu"] == pytest.approx(30.0 * 10 + (140.0 - 30.0) / 10 * 20)


def test_dram_charges_resident_gb_seconds_and_bytes_moved(gpu, host, idle_activity):
    act = idle_activity(10.0, dram_resident_gb_s=640.0, dram_bytes_moved=4 * 10**9)
    r = assess(act, gpu, host, CarbonConfig())
    assert r.energy_by_component_j["dram"] == pytest.approx(0.3725 * 640.0 + 0.25 * 4)


def test_pue_adds_facility_energy(gpu, host, activity, with_):
    base = assess(activity, gpu, host, CarbonConfig())
    r = assess(activity, gpu, host, with_(CarbonConfig(), pue=1.5))
    assert r.energy_j == pytest.approx(1.5 * base.energy_j)
    assert r.energy_by_component_j["facility"] == pytest.approx(0.5 * base.energy_j)
    assert r.it_energy_j == pytest.approx(base.energy_j)


@FACTORIES
@given(g=st.floats(0.0, 2000.0), k=st.floats(0.0, 50.0))
def test_carbon_scales_linearly_with_intensity(gpu, host, activity, g, k):
    a = assess(activity, gpu, host, CarbonConfig(grid_g_per_kwh=g))
    b = assess(activity, gpu, host, CarbonConfig(grid_g_per_kwh=k * g))
    for name, grams in a.breakdown["operational"].items():
        assert b.breakdown["operational"][name] == pytest.approx(k * grams, rel=1e-12, abs=1e-300)
    assert b.breakdown["embodied"] == a.breakdown["embodied"]  # intensity is operational only
    assert b.operational_g == pytest.approx(k * a.operational_g, rel=1e-12, abs=1e-300)
    assert b.energy_j == a.energy_j


@pytest.mark.parametrize("boundary,gpu_kg", [(Boundary.DIE, None), (Boundary.CARD, 150.0),
                                             (Boundary.SERVER_SHARE, 318.0)])
def test_reused_hardware_zeroes_embodied_and_nothing_else(gpu, host, activity, with_,
                                                          boundary, gpu_kg):
    new = with_(CarbonConfig(), boundary=boundary, gpu_kg=gpu_kg)
    a = assess(activity, gpu, host, new)
    b = assess(activity, gpu, host, with_(new, reused_hardware=True))
    assert a.embodied_g > 0
    assert set(b.breakdown["embodied"]) == set(a.breakdown["embodied"])
    assert all(v == 0.0 for v in b.breakdown["embodied"].values())
    assert b.breakdown["operational"] == a.breakdown["operational"]
    assert b.energy_by_component_j == a.energy_by_component_j
    assert b.carbon_g == pytest.approx(a.carbon_g - a.embodied_g, rel=1e-12)


def test_die_embodied_is_area_times_cpa_plus_package_amortized(gpu, host, idle_activity, with_):
    cfg = with_(CarbonConfig(), dram_kg_per_gb=0.0, ssd_kg_per_gb=0.0)
    act = idle_activity(SECONDS_PER_YEAR * 5 / 1000)  # a thousandth of the 5-year lifetime
    r = assess(act, gpu, host, cfg)
    # 600 mm2 = 6 cm2 x 1.2 kg/cm2 (12 nm, LLMCarbon) + 0.15 kg package = 7.35 kg -> 7.35 g
    assert r.breakdown["embodied"]["gpu"] == pytest.approx(7.35, rel=1e-12)


def test_cpa_by_node_interpolates_between_and_clamps_outside_the_table():
    assert cpa_by_node(12)[0] == 1.2
    assert cpa_by_node(8)[0] == pytest.approx(1.52)  # Samsung 8N: 1.2 + 4/5 x (1.6 - 1.2)
    assert cpa_by_node(28)[0] == 1.0
    assert "clamped" in cpa_by_node(28)[1] and "interpolated" in cpa_by_node(8)[1]
    assert cpa_by_node(3)[0] == 1.8


def test_card_and_server_share_boundaries_charge_the_given_figure(gpu, host, idle_activity,
                                                                  with_):
    act = idle_activity(SECONDS_PER_YEAR * 5 / 1000)
    card = assess(act, gpu, host, with_(CarbonConfig(), boundary=Boundary.CARD, gpu_kg=150.0))
    share = assess(act, gpu, host, with_(CarbonConfig(), boundary=Boundary.SERVER_SHARE,
                                         gpu_kg=318.0))
    assert card.breakdown["embodied"]["gpu"] == pytest.approx(150.0)
    assert card.breakdown["embodied"]["dram"] == pytest.approx(64 * 2**30 / 1e9 * 0.4)
    assert share.breakdown["embodied"] == {"server_share": pytest.approx(318.0)}


@FACTORIES
@given(runtime=st.floats(1e-3, 1e6), fracs=st.lists(st.floats(0, 0.33), min_size=3, max_size=3),
       pue=st.floats(1.0, 2.0), tokens=st.integers(0, 10**6), reused=st.booleans())
def test_breakdown_sums_to_the_total(gpu, host, runtime, fracs, pue, tokens, reused):
    act = Activity(runtime_s=runtime, gpu_busy_compute_s=fracs[0] * runtime,
                   gpu_busy_memory_s=fracs[1] * runtime, gpu_wait_io_s=fracs[2] * runtime,
                   cpu_busy_core_s=runtime, dram_resident_gb_s=30 * runtime,
                   dram_bytes_moved=10**9, ssd_active_s=0.5 * runtime, pcie_bytes_moved=10**9,
                   num_tokens=tokens)
    r = assess(act, gpu, host, CarbonConfig(pue=pue, reused_hardware=reused))
    parts = [*r.breakdown["operational"].values(), *r.breakdown["embodied"].values()]
    assert r.carbon_g == pytest.approx(math.fsum(parts), rel=1e-12)
    assert r.energy_j == pytest.approx(math.fsum(r.energy_by_component_j.values()), rel=1e-12)
    s = r.to_summary()
    assert s["carbon_g"] == r.carbon_g
    assert set(s["carbon_breakdown_g"]) == {"operational", "embodied"}
    if tokens:
        assert r.carbon_g_per_token == pytest.approx(r.carbon_g / tokens)
    else:
        assert r.carbon_g_per_token is None


def test_every_constant_used_is_recorded_and_printable(gpu, host, activity):
    r = assess(activity, gpu, host, CarbonConfig(grid="france"))
    text = r.format_constants()
    for name in ("gpu_idle_w", "gpu_memory_w", "cpu_tdp_w", "dram_w_per_gb", "ssd_idle_w",
                 "pue", "grid_g_per_kwh", "cpa_kg_per_cm2", "lifetime_years",
                 "embodied_boundary"):
        assert name in r.constants_used and name in text
    assert r.constants_used["grid_g_per_kwh"].value == 56.039
    assert "codecarbon" in r.constants_used["grid_g_per_kwh"].source
    assert "Green Algorithms" in r.constants_used["dram_w_per_gb"].source


def test_carbon_package_imports_neither_simpy_nor_torch():
    code = ("import sys, m2sim.carbon; "
            "bad = [m for m in ('simpy', 'torch', 'hydra') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
