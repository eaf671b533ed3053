"""Hourly grid-intensity profiles: the run's clock integrates the piecewise-constant profile."""

from __future__ import annotations

import pytest

from m2sim.carbon import CarbonConfig, assess
from m2sim.carbon.grid import mean_profile_g_per_kwh, profile_integral_g_h_per_kwh

RAMP = [100.0 * h for h in range(24)]  # hour h of the day: 100 h gCO2/kWh


def constant_power_cfg(with_, **kw) -> CarbonConfig:
    """Only the GPU draws power (250 W compute-bound), so energy is exactly 250 W x runtime."""
    return with_(CarbonConfig(), include_cpu=False, dram_w_per_gb=0.0, ssd_active_w=0.0,
                 ssd_idle_w=0.0, reused_hardware=True, **kw)


def test_profile_integration_is_exact_on_a_hand_case(gpu, host, idle_activity, with_):
    """Start 22:30, run 2 h at 250 W: 0.5 kWh. Intensity: 0.5 h at 2200, 1 h at 2300, 0.5 h at 0
    (midnight wraps to hour 0) = 3400 g h/kWh, mean 1700 g/kWh -> 0.5 x 1700 = 850 g."""
    act = idle_activity(7200.0, start_hour=22.5, gpu_busy_compute_s=7200.0)
    r = assess(act, gpu, host, constant_power_cfg(with_, grid_profile_g_per_kwh=RAMP))
    assert r.energy_j == 1.8e6
    assert r.constants_used["grid_g_per_kwh"].value == pytest.approx(1700.0, rel=1e-15)
    assert r.carbon_g == pytest.approx(850.0, rel=1e-15)


def test_profile_inside_one_hour_uses_that_hour():
    assert mean_profile_g_per_kwh(RAMP, 5.25, 0.5) == 500.0
    assert mean_profile_g_per_kwh(RAMP, 5.25, 0.0) == 500.0  # a zero-length run: its start hour


def test_whole_days_average_the_profile_from_any_start():
    mean = sum(RAMP) / 24
    for start in (0.0, 7.0, 13.75):
        assert mean_profile_g_per_kwh(RAMP, start, 72.0) == pytest.approx(mean, rel=1e-15)
    assert profile_integral_g_h_per_kwh(RAMP, 23.0, 26.0) == pytest.approx(
        sum(RAMP) + 2300.0 + 0.0, rel=1e-15)  # a day, then 23:00-24:00 and 00:00-01:00 again


def test_flat_profile_equals_the_fixed_intensity(gpu, host, activity, with_):
    flat = assess(activity, gpu, host, with_(CarbonConfig(), grid_profile_g_per_kwh=[475.0] * 24))
    fixed = assess(activity, gpu, host, CarbonConfig(grid="world"))
    assert flat.carbon_g == pytest.approx(fixed.carbon_g, rel=1e-14)


def test_profile_start_hour_comes_from_the_activity(gpu, host, idle_activity, with_):
    cfg = constant_power_cfg(with_, grid_profile_g_per_kwh=RAMP)
    night = assess(idle_activity(3600.0, start_hour=1.0, gpu_busy_compute_s=3600.0), gpu, host, cfg)
    eve = assess(idle_activity(3600.0, start_hour=20.0, gpu_busy_compute_s=3600.0), gpu, host, cfg)
    assert eve.carbon_g == pytest.approx(20 * night.carbon_g, rel=1e-14)
