"""The ``carbon`` config group: every option composes, overrides stay simple, bad input fails
with a ConfigError naming the field; the paper's Eq. 1 preset matches a hand computation."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from m2sim.carbon import Activity, Boundary, CarbonConfig, assess, register_carbon_configs
from m2sim.errors import ConfigError

OPTIONS = ["default", "paper_eq1"]


def carbon_cfg(*overrides: str, option: str = "default") -> CarbonConfig:
    """Compose only the carbon group (the root config's other groups are not needed here)."""
    register_carbon_configs(ConfigStore.instance())
    with initialize(version_base="1.3", config_path="../../conf"):
        dcfg = compose(overrides=[f"+carbon={option}", *overrides])
    return OmegaConf.to_object(dcfg.carbon)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_carbon_option_composes_to_the_schema(option):
    cfg = carbon_cfg(option=option)
    assert isinstance(cfg, CarbonConfig) and cfg.name == option


def test_default_option_equals_the_schema_defaults():
    assert carbon_cfg() == CarbonConfig()


def test_grid_overrides_by_name_or_number():
    assert carbon_cfg("carbon.grid=france").fixed_g_per_kwh[0] == 56.039
    assert carbon_cfg("carbon.grid_g_per_kwh=300").fixed_g_per_kwh[0] == 300.0
    assert carbon_cfg("carbon.grid_g_per_kwh=300", option="paper_eq1").fixed_g_per_kwh[0] == 300
    assert carbon_cfg("carbon.boundary=CARD", "carbon.gpu_kg=150").boundary is Boundary.CARD


def test_paper_eq1_preset_reproduces_a_hand_computation(gpu, host):
    """M2Cache Eq. 1 (Fig. 13 caption): (DRAM GB x 26 W / 256 GB + SSD 2 W) x runtime x 820 g/kWh.

    64 GB resident for 100 s: (64 x 26 / 256 + 2) W x 100 s = (6.5 + 2) x 100 = 850 J;
    850 J / 3.6e6 J/kWh x 820 g/kWh = 0.193611... g. GPU and CPU work is ignored, as in the paper,
    and the already-deployed hardware adds no embodied carbon.
    """
    cfg = carbon_cfg(option="paper_eq1")
    act = Activity(runtime_s=100.0, gpu_busy_compute_s=30.0, gpu_busy_memory_s=60.0,
                   gpu_wait_io_s=10.0, cpu_busy_core_s=400.0, dram_resident_gb_s=64.0 * 100.0,
                   dram_bytes_moved=10**12, ssd_active_s=50.0, pcie_bytes_moved=10**11,
                   num_tokens=50)
    r = assess(act, gpu, host, cfg)
    assert r.energy_j == pytest.approx(850.0, rel=1e-14)
    assert r.carbon_g == pytest.approx(850.0 / 3.6e6 * 820.0, rel=1e-14)
    assert r.breakdown["operational"]["dram"] == pytest.approx(650.0 / 3.6e6 * 820.0, rel=1e-14)
    assert r.breakdown["operational"]["ssd"] == pytest.approx(200.0 / 3.6e6 * 820.0, rel=1e-14)
    assert r.breakdown["operational"]["gpu"] == r.breakdown["operational"]["cpu"] == 0.0
    assert r.embodied_g == 0.0
    assert r.carbon_g_per_token == pytest.approx(r.carbon_g / 50)


BAD_CONFIGS = [
    ({"dram_w_per_gb": -0.1}, "carbon.dram_w_per_gb"),
    ({"ssd_active_w": -2.0}, "carbon.ssd_active_w"),
    ({"dram_j_per_gb_moved": -1.0}, "carbon.dram_j_per_gb_moved"),
    ({"grid_g_per_kwh": -5.0}, "carbon.grid_g_per_kwh"),
    ({"grid": "mars"}, "carbon.grid"),
    ({"lifetime_years": 0.0}, "carbon.lifetime_years"),
    ({"lifetime_years": -3.0}, "carbon.lifetime_years"),
    ({"cpa_kg_per_cm2": -1.2}, "carbon.cpa_kg_per_cm2"),
    ({"dram_kg_per_gb": -0.4}, "carbon.dram_kg_per_gb"),
    ({"pue": 0.9}, "carbon.pue"),
    ({"gpu_memory_load_frac": 1.5}, "carbon.gpu_memory_load_frac"),
    ({"start_hour": 24.0}, "carbon.start_hour"),
    ({"boundary": Boundary.CARD}, "carbon.gpu_kg"),
    ({"grid_profile_g_per_kwh": [400.0] * 23}, "carbon.grid_profile_g_per_kwh"),
    ({"grid_profile_g_per_kwh": [400.0] * 25}, "carbon.grid_profile_g_per_kwh"),
    ({"grid_profile_g_per_kwh": [400.0] * 5 + [None] + [400.0] * 18},
     "carbon.grid_profile_g_per_kwh"),
    ({"grid_profile_g_per_kwh": [400.0] * 5 + [math.nan] + [400.0] * 18},
     "carbon.grid_profile_g_per_kwh"),
    ({"grid_profile_g_per_kwh": [400.0] * 23 + [-1.0]}, "carbon.grid_profile_g_per_kwh[23]"),
]


@pytest.mark.parametrize("kw,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_carbon_config_names_the_field(kw, field):
    with pytest.raises(ConfigError) as err:
        CarbonConfig(**kw)
    assert err.value.field == field


def test_bad_override_fails_through_hydra_with_the_field():
    with pytest.raises(ConfigError, match="carbon.grid"):
        carbon_cfg("carbon.grid=atlantis")
    with pytest.raises(ConfigError, match="hour 3"):
        carbon_cfg("carbon.grid_profile_g_per_kwh=[1,2,3,null," + ",".join(["5"] * 20) + "]")


@pytest.mark.parametrize("kw,field", [
    ({"runtime_s": -1.0}, "activity.runtime_s"),
    ({"dram_resident_gb_s": -5.0}, "activity.dram_resident_gb_s"),
    ({"gpu_busy_memory_s": 200.0}, "activity.gpu_wait_io_s"),  # busy > runtime
    ({"ssd_active_s": 101.0}, "activity.ssd_active_s"),
    ({"start_hour": 25.0}, "activity.start_hour"),
])
def test_bad_activity_names_the_field(make_activity, kw, field):
    with pytest.raises(ConfigError) as err:
        make_activity(**kw)
    assert err.value.field == field


def test_more_busy_core_seconds_than_cores_fails(make_activity, gpu, host):
    with pytest.raises(ConfigError, match="activity.cpu_busy_core_s"):
        assess(make_activity(cpu_busy_core_s=1001.0), gpu, host, CarbonConfig())


def test_negative_die_area_or_power_in_hardware_configs_fail(make_gpu, make_host):
    with pytest.raises(ConfigError, match="gpu.die_area_mm2"):
        make_gpu(die_area_mm2=-600.0)
    with pytest.raises(ConfigError, match="gpu.idle_w"):
        make_gpu(idle_w=-1.0)
    with pytest.raises(ConfigError, match="host.cpu_idle_w"):
        make_host(cpu_idle_w=-1.0)
