"""Grid carbon intensity: named presets, a fixed number, or an hourly profile over the run.

Presets are copied from ``shared/data/carbon.csv`` (each row names its source). An hourly profile
holds 24 values in gCO2/kWh, value ``i`` covering clock hours [i, i+1) of every day; the run's
clock starts at ``start_hour`` and the profile is integrated exactly (it is piecewise constant).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

HOURS_PER_DAY = 24

# name -> (gCO2/kWh, source); rows of shared/data/carbon.csv (grid_intensity_*).
GRID_PRESETS: dict[str, tuple[float, str]] = {
    "coal": (820.0, "ACT per-source table (the value M2Cache uses)"),
    "gas": (490.0, "ACT per-source table"),
    "solar": (41.0, "ACT per-source table"),
    "wind": (11.0, "ACT per-source table"),
    "nuclear": (12.0, "ACT per-source table"),
    "hydro": (24.0, "ACT per-source table"),
    "world": (475.0, "codecarbon world average fallback (IEA 2019)"),
    "usa": (369.473, "codecarbon global_energy_mix, 2023 data"),
    "france": (56.039, "codecarbon global_energy_mix, 2023 data"),
    "germany": (380.95, "codecarbon global_energy_mix, 2023 data"),
    "china": (582.317, "codecarbon global_energy_mix, 2023 data"),
    "india": (713.441, "codecarbon global_energy_mix, 2023 data"),
    "sweden": (40.695, "codecarbon global_energy_mix, 2023 data"),
    "taiwan": (642.378, "codecarbon global_energy_mix, 2023 data"),
}


def profile_integral_g_h_per_kwh(profile: Sequence[float], start_hour: float,
                                 duration_h: float) -> float:
    """Integral of the periodic hourly profile over [start_hour, start_hour + duration_h].

    Returns gCO2/kWh x hours; divide by ``duration_h`` for the mean intensity over the run.
    """
    return _cumulative(profile, start_hour + duration_h) - _cumulative(profile, start_hour)


def mean_profile_g_per_kwh(profile: Sequence[float], start_hour: float, duration_h: float) -> float:
    """Mean intensity over the run; a zero-length run takes the value of its starting hour."""
    if duration_h == 0:
        return float(profile[int(math.floor(start_hour)) % HOURS_PER_DAY])
    return profile_integral_g_h_per_kwh(profile, start_hour, duration_h) / duration_h


def _cumulative(profile: Sequence[float], hour: float) -> float:
    """Integral of the profile from hour 0 to ``hour`` (>= 0), across whole days."""
    days = math.floor(hour / HOURS_PER_DAY)
    rest = hour - days * HOURS_PER_DAY  # [0, 24)
    whole = int(math.floor(rest))
    partial = (rest - whole) * profile[whole] if whole < HOURS_PER_DAY else 0.0
    return days * math.fsum(profile) + math.fsum(profile[:whole]) + partial
