"""Validation: LLMCarbon's operational estimates for its published training runs.

LLMCarbon (Faiz et al., ICLR 2024, §3 "operational carbon footprint model") computes energy as
E = sum_i P_i x eff_i x n_i x t_i, times PUE, and carbon as E x grid intensity. Its Table 4
validates that model on five published training runs; for those runs the per-device power
P_i x eff_i is the *measured average system power per accelerator* (chip + host, memory,
network and fans) that the original reports give, so E = devices x days x 24 h x avg power x PUE.

Inputs, per run, and where each number comes from (no internet here: all from recollection of
the papers, cross-checked below against the published energies and emissions they must
reproduce; LLMCarbon's database.csv itself was not available):
- T5, GPT-3, GShard-600B, Switch Transformer: Patterson et al., "Carbon Emissions and Large
  Neural Network Training" (arXiv 2104.10350, 2021), Table 4, rows "Number of chips",
  "Training time (days)", "Measured system average power per accelerator", "Datacenter PUE",
  "Datacenter net tCO2e/MWh", "Energy consumption (MWh)", "Net tCO2e", as reprinted in LLMCarbon
  Table 4. GShard's 177 gCO2/kWh (net, after Google's carbon-free energy purchases) is the least
  certain recollection; it is consistent with 24.1 MWh -> 4.3 t. GShard's PUE (1.09) and
  Switch's (1.10) are recalled, consistent with their published MWh to 0.8% and 0.1%.
- XLM: LLMCarbon Table 4, citing Wu et al., "Sustainable AI" (MLSys 2022): 512 V100, 20.4 days,
  342 W, PUE 1.1, 413 gCO2/kWh, 39 tCO2e. Recalled with less confidence than the Patterson rows;
  no published MWh is recalled for it, so only its tCO2e is checked.
LLMCarbon's own *predicted* column (which replaces the published days with its FLOP-based
training-time model) is not reproduced: those values are not recalled with confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from m2sim.carbon import CarbonConfig, assess


@dataclass(frozen=True)
class Run:
    name: str
    num_devices: int
    days: float
    avg_power_w: float  # measured system average power per accelerator
    pue: float
    g_per_kwh: float
    published_mwh: Optional[float]
    published_t: float  # published tCO2e


RUNS = [
    Run("T5", 512, 20.0, 310.0, 1.12, 545.0, 85.7, 46.7),  # TPUv3
    Run("GPT-3", 10_000, 14.8, 330.0, 1.10, 429.0, 1287.0, 552.1),  # V100
    Run("GShard-600B", 1024, 3.1, 288.0, 1.09, 177.0, 24.1, 4.3),  # TPUv3
    Run("Switch", 1024, 27.0, 245.0, 1.10, 330.0, 179.0, 59.1),  # TPUv3
    Run("XLM", 512, 20.4, 342.0, 1.10, 413.0, None, 39.0),  # V100
]


def llmcarbon_operational(run: Run) -> tuple[float, float]:
    """LLMCarbon's arithmetic: (MWh, tCO2e) = n x t x P x PUE, then x intensity."""
    mwh = run.num_devices * run.days * 24.0 * run.avg_power_w * run.pue / 1e6
    return mwh, mwh * run.g_per_kwh / 1e3


def m2sim_operational(run: Run, make_gpu, make_host, idle_activity) -> tuple[float, float]:
    """The same run through ``assess``: one device busy (at its average power) for the whole
    run, host, DRAM and SSD folded into that average power, no embodied part; times n."""
    device = make_gpu(name=run.name, tdp_w=run.avg_power_w, idle_w=0.0)
    host = make_host(cpu_tdp_w=0.0, cpu_idle_w=0.0)
    cfg = CarbonConfig(include_cpu=False, dram_w_per_gb=0.0, dram_j_per_gb_moved=0.0,
                       ssd_active_w=0.0, ssd_idle_w=0.0, pue=run.pue,
                       grid_g_per_kwh=run.g_per_kwh, reused_hardware=True)
    runtime_s = run.days * 86400.0
    r = assess(idle_activity(runtime_s, gpu_busy_compute_s=runtime_s), device, host, cfg)
    return r.energy_j * run.num_devices / 3.6e9, r.carbon_g * run.num_devices / 1e6


def _half_unit(x: float) -> float:
    """Half a unit in the last printed digit (46.7 -> 0.05, 4.3 -> 0.05, 552.1 -> 0.05)."""
    return 0.5 * 10 ** -len(repr(x).split(".")[1]) if "." in repr(x) else 0.5


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_assess_reproduces_llmcarbon_operational_arithmetic(run, make_gpu, make_host,
                                                            idle_activity):
    mwh, t = m2sim_operational(run, make_gpu, make_host, idle_activity)
    ref_mwh, ref_t = llmcarbon_operational(run)
    assert mwh == pytest.approx(ref_mwh, rel=1e-9)  # the brief asks 1%; the arithmetic is exact
    assert t == pytest.approx(ref_t, rel=1e-9)


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_assess_matches_the_published_energy_and_emissions(run, make_gpu, make_host,
                                                           idle_activity):
    """Published figures were computed from unrounded days: 1%, plus the printed rounding."""
    mwh, t = m2sim_operational(run, make_gpu, make_host, idle_activity)
    if run.published_mwh is not None:
        assert mwh == pytest.approx(run.published_mwh, rel=0.01)
    tol = 0.01 * run.published_t + _half_unit(run.published_t)
    assert abs(t - run.published_t) <= tol


def test_gpt3_is_about_552_tonnes():
    """The headline row: 10,000 V100 x 14.8 days x 330 W x PUE 1.1 = 1289 MWh -> 553 t."""
    mwh, t = llmcarbon_operational(RUNS[1])
    assert round(mwh) == 1289 and round(t) == 553
