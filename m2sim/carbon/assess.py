"""``assess``: a run's activity + hardware + carbon config -> energy and carbon (a CarbonReport).

Operational carbon = facility energy (IT energy x PUE) x grid intensity; with an hourly profile
the intensity is the profile's mean over the run's clock. DECISION: energy is taken as spread
evenly over the runtime (the activity holds totals, not a power trace), so the profile's mean
over [start, start + runtime] is exact for that. Embodied carbon is amortized by runtime.
"""

from __future__ import annotations

import math

from m2sim.carbon.activity import Activity
from m2sim.carbon.config import CarbonConfig
from m2sim.carbon.embodied import embodied_g
from m2sim.carbon.grid import mean_profile_g_per_kwh
from m2sim.carbon.operational import operational_energy_j
from m2sim.carbon.report import CarbonReport, Constant
from m2sim.hardware import GPUConfig, HostConfig

J_PER_KWH = 3.6e6


def run_intensity_g_per_kwh(act: Activity, cfg: CarbonConfig) -> tuple[float, list[Constant]]:
    """Grid intensity that applies to the run (gCO2/kWh), and where it came from."""
    if cfg.grid_profile_g_per_kwh is None:
        value, source = cfg.fixed_g_per_kwh
        return value, [Constant(name="grid_g_per_kwh", value=value, unit="gCO2/kWh",
                                source=source)]
    profile = [float(v) for v in cfg.grid_profile_g_per_kwh]  # checked: 24 values, no gaps
    mean = mean_profile_g_per_kwh(profile, act.start_hour, act.runtime_s / 3600.0)
    return mean, [
        Constant(name="grid_profile_g_per_kwh", value=profile, unit="gCO2/kWh by clock hour",
                 source=cfg.source_of("grid_profile_g_per_kwh")),
        Constant(name="start_hour", value=act.start_hour, unit="h", source="activity.start_hour"),
        Constant(name="grid_g_per_kwh", value=mean, unit="gCO2/kWh",
                 source="mean of the hourly profile over the run's clock")]


def assess(activity: Activity, gpu: GPUConfig, host: HostConfig,
           cfg: CarbonConfig) -> CarbonReport:
    """Energy (J) and carbon (gCO2e) of one run, operational + embodied, with its constants."""
    it_j, consts = operational_energy_j(activity, gpu, host, cfg)
    facility_j = (cfg.pue - 1.0) * math.fsum(it_j.values())
    energy_by_component = {**it_j, "facility": facility_j}
    consts.append(Constant(name="pue", value=cfg.pue, unit="", source=cfg.source_of("pue")))
    intensity, grid_consts = run_intensity_g_per_kwh(activity, cfg)
    consts += grid_consts
    operational = {k: e / J_PER_KWH * intensity for k, e in energy_by_component.items()}
    embodied, emb_consts = embodied_g(activity.runtime_s, gpu, host, cfg)
    consts += emb_consts
    carbon_g = math.fsum([*operational.values(), *embodied.values()])
    per_token = carbon_g / activity.num_tokens if activity.num_tokens > 0 else None
    return CarbonReport(
        energy_j=math.fsum(energy_by_component.values()),
        energy_by_component_j=energy_by_component,
        carbon_g=carbon_g,
        carbon_g_per_token=per_token,
        breakdown={"operational": operational, "embodied": embodied},
        constants_used={c.name: c for c in consts},
    )
