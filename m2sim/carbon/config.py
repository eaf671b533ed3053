"""Schema of the ``carbon`` config group: power by component and state, grid, PUE, embodied.

One schema covers both options: ``conf/carbon/default.yaml`` (the fuller model) and
``conf/carbon/paper_eq1.yaml`` (M2Cache Eq. 1: DRAM + SSD power only, 820 gCO2/kWh, reused
hardware). YAML-facing fields carry human units (``_w``, ``_kg``, ``_years``, ``_g_per_kwh``);
``assess`` reads them through the SI properties. ``__post_init__`` only checks.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from typing import Optional

from m2sim.carbon.grid import GRID_PRESETS, HOURS_PER_DAY
from m2sim.errors import ConfigError, check_frac, check_nonneg, check_positive, check_range

SECONDS_PER_YEAR = 365 * 24 * 3600  # DECISION: a 365-day year for lifetimes (as ACT's hours)


# Where each default value comes from (printed with the constants a report used).
_DEFAULT_SOURCES = {
    "gpu_compute_load_frac": "SplitwiseSim power model: prefill at TDP (shared/data/carbon.csv)",
    "gpu_memory_load_frac": "SplitwiseSim power model: decode 0.49-0.55 of idle..TDP "
                            "(shared/data/carbon.csv)",
    "gpu_wait_io_load_frac": "assumed",
    "dram_w_per_gb": "Green Algorithms (shared/data/carbon.csv)",
    "dram_j_per_gb_moved": "~2 nJ per 64-bit DRAM access, Horowitz ISSCC 2014",
    "pcie_j_per_gb_moved": "not counted: inside GPU/CPU package power",
    "pue": "codecarbon default (shared/data/carbon.csv)",
    "lifetime_years": "LLMCarbon embodied.py (shared/data/carbon.csv)",
    "gpu_package_kg": "ACT package_embodied (shared/data/carbon.csv)",
    "dram_kg_per_gb": "LLMCarbon hardware.csv (shared/data/carbon.csv)",
    "ssd_kg_per_gb": "LLMCarbon hardware.csv (shared/data/carbon.csv)",
    "host_kg": "no source in shared/data",
    "host_share_frac": "whole host charged to this GPU",
}


class Boundary(Enum):
    """What the GPU's embodied carbon covers (shared/data/README: estimates differ > 10x)."""

    DIE = "die"  # GPU die (area x carbon per area) + one IC package; DRAM, SSD, host added
    CARD = "card"  # a per-card figure (``gpu_kg``); DRAM, SSD, host added
    SERVER_SHARE = "server_share"  # one figure (``gpu_kg``) for the GPU's share of a server
    #                                including its CPU, DRAM and SSD: nothing else is added


@dataclass
class CarbonConfig:  # not frozen: Hydra must merge YAML into it (as the other schemas)
    """Energy and carbon of a run; see ``m2sim.carbon.assess``."""

    name: str = "default"
    # --- grid ---
    grid: str = "world"  # preset name (m2sim/carbon/grid.py, from shared/data/carbon.csv)
    grid_g_per_kwh: Optional[float] = None  # a number here overrides ``grid``
    grid_profile_g_per_kwh: Optional[list[Optional[float]]] = None  # 24 hourly values, hour 0
    #                       first; overrides both of the above. Gaps (null) are rejected.
    start_hour: float = 0.0  # clock hour a simulated run starts at (feeds Activity.start_hour)
    pue: float = 1.0  # facility energy / IT energy (1.0: a desktop; codecarbon's default)
    # --- operational power ---
    include_gpu: bool = True  # False: GPU energy not counted (paper Eq. 1)
    include_cpu: bool = True  # False: host CPU energy not counted (paper Eq. 1)
    # GPU power in a state = idle_w + load_frac x (tdp_w - idle_w), idle..TDP of the gpu config.
    gpu_compute_load_frac: float = 1.0  # SplitwiseSim: prefill at TDP (A100 400 W, H100 700 W)
    gpu_memory_load_frac: float = 0.5  # SplitwiseSim decode: A100 (250-63)/(400-63) = 0.55,
    #                                    H100 (380-75)/(700-75) = 0.49
    gpu_wait_io_load_frac: float = 0.1  # DECISION: clocks up, DMA engines busy, SMs idle; assumed
    dram_w_per_gb: float = 0.3725  # per GB resident (Green Algorithms, shared/data/carbon.csv)
    dram_j_per_gb_moved: float = 0.25  # ~2 nJ per 64-bit DRAM access (Horowitz, ISSCC 2014)
    pcie_j_per_gb_moved: float = 0.0  # DECISION: link PHYs are inside GPU/CPU package power
    ssd_active_w: Optional[float] = None  # None: host.ssd.active_w
    ssd_idle_w: Optional[float] = None  # None: host.ssd.idle_w
    # --- embodied ---
    reused_hardware: bool = False  # True: hardware already deployed adds no embodied carbon
    lifetime_years: float = 5.0  # amortization period (LLMCarbon embodied.py)
    boundary: Boundary = Boundary.DIE
    cpa_kg_per_cm2: Optional[float] = None  # None: LLMCarbon table by gpu.process_nm
    gpu_package_kg: float = 0.15  # per IC package (ACT), boundary DIE only
    gpu_kg: Optional[float] = None  # per card (CARD) or per server share (SERVER_SHARE)
    dram_kg_per_gb: float = 0.4  # LLMCarbon hardware.csv (ACT DDR4 10 nm: 0.065)
    ssd_kg_per_gb: float = 0.018  # LLMCarbon hardware.csv (ACT NAND 10 nm: 0.010)
    host_kg: float = 0.0  # CPU, board, PSU, chassis: no source in shared/data, so 0
    host_share_frac: float = 1.0  # share of DRAM, SSD and host charged to this GPU

    def __post_init__(self) -> None:
        if self.grid not in GRID_PRESETS:
            raise ConfigError("carbon.grid", f"unknown preset {self.grid!r} "
                              f"(allowed: {', '.join(sorted(GRID_PRESETS))})")
        check_nonneg("carbon.grid_g_per_kwh", self.grid_g_per_kwh, optional=True)
        if self.grid_profile_g_per_kwh is not None:
            _check_profile(list(self.grid_profile_g_per_kwh))
        check_range("carbon.start_hour", self.start_hour, 0, HOURS_PER_DAY, hi_open=True)
        check_range("carbon.pue", self.pue, 1.0, None)
        for f in ("gpu_compute_load_frac", "gpu_memory_load_frac", "gpu_wait_io_load_frac",
                  "host_share_frac"):
            check_frac(f"carbon.{f}", getattr(self, f))
        for f in ("dram_w_per_gb", "dram_j_per_gb_moved", "pcie_j_per_gb_moved",
                  "gpu_package_kg", "dram_kg_per_gb", "ssd_kg_per_gb", "host_kg"):
            check_nonneg(f"carbon.{f}", getattr(self, f))
        check_nonneg("carbon.ssd_active_w", self.ssd_active_w, optional=True)
        check_nonneg("carbon.ssd_idle_w", self.ssd_idle_w, optional=True)
        check_positive("carbon.lifetime_years", self.lifetime_years)
        check_positive("carbon.cpa_kg_per_cm2", self.cpa_kg_per_cm2, optional=True)
        check_nonneg("carbon.gpu_kg", self.gpu_kg, optional=True)
        if self.boundary is not Boundary.DIE and self.gpu_kg is None and not self.reused_hardware:
            raise ConfigError("carbon.gpu_kg", f"is required with boundary "
                              f"{self.boundary.name} (a per-card or per-server-share figure)")

    def source_of(self, field: str) -> str:
        """Where a field's value comes from: its default's source, or the option that set it."""
        default = next(f.default for f in fields(self) if f.name == field)
        if default is not MISSING and getattr(self, field) == default:
            return f"carbon.{field}: {_DEFAULT_SOURCES.get(field, 'schema default')}"
        return f"carbon.{field}: set by carbon option {self.name!r} or an override"

    @property
    def lifetime_s(self) -> float:
        return self.lifetime_years * SECONDS_PER_YEAR

    @property
    def dram_w_per_byte(self) -> float:
        return self.dram_w_per_gb / 1e9

    @property
    def dram_j_per_byte(self) -> float:
        return self.dram_j_per_gb_moved / 1e9

    @property
    def pcie_j_per_byte(self) -> float:
        return self.pcie_j_per_gb_moved / 1e9

    @property
    def fixed_g_per_kwh(self) -> tuple[float, str]:
        """The constant intensity and where it comes from (when no profile is set)."""
        if self.grid_g_per_kwh is not None:
            return self.grid_g_per_kwh, self.source_of("grid_g_per_kwh")
        value, source = GRID_PRESETS[self.grid]
        return value, f"preset {self.grid!r}: {source}"


def _check_profile(profile: list[Optional[float]]) -> None:
    field = "carbon.grid_profile_g_per_kwh"
    if len(profile) != HOURS_PER_DAY:
        raise ConfigError(field, f"needs {HOURS_PER_DAY} hourly values, got {len(profile)}")
    for hour, v in enumerate(profile):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ConfigError(field, f"gap at hour {hour} (every hour needs a value)")
        check_nonneg(f"{field}[{hour}]", v)


def register_carbon_configs(cs) -> None:
    """Store the ``carbon`` group's schema as ``base_carbon`` (options extend it)."""
    cs.store(group="carbon", name="base_carbon", node=CarbonConfig)
