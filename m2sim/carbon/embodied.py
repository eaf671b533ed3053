"""Embodied carbon: what making the hardware emitted, amortized over its lifetime by runtime.

Per component: the GPU by die area x carbon per area (CPA, by process node) plus one IC package,
or a per-card / per-server-share figure (``Boundary``); DRAM and SSD per installed GB; a host
figure. Each is charged ``runtime / lifetime`` (ACT: CF = OPCF + T/LT x ECF). Already-deployed
hardware (``reused_hardware``) adds nothing. Also ACT's per-area die model, for deriving a CPA.
"""

from __future__ import annotations

from m2sim.carbon.config import Boundary, CarbonConfig
from m2sim.carbon.report import Constant
from m2sim.hardware import GB, GIB, GPUConfig, HostConfig

# Carbon per die area (kgCO2/cm2) by process node (nm): LLMCarbon hardware.csv, via
# shared/data/carbon.csv rows cpa_16nm, cpa_12nm, cpa_7nm, cpa_4nm.
CPA_KG_PER_CM2_BY_NM: dict[float, float] = {16: 1.0, 12: 1.2, 7: 1.6, 4: 1.8}
CPA_SOURCE = "LLMCarbon hardware.csv (shared/data/carbon.csv cpa_*)"


def cpa_by_node(process_nm: float) -> tuple[float, str]:
    """CPA (kgCO2/cm2) for a node and how it was found.

    DECISION: nodes between table entries are interpolated linearly in nm (Samsung 8N -> 1.52);
    nodes outside are clamped to the nearest entry (28 nm -> the 16 nm value, likely high:
    older nodes take less fab energy per area in ACT).
    """
    nodes = sorted(CPA_KG_PER_CM2_BY_NM)  # ascending nm
    if process_nm in CPA_KG_PER_CM2_BY_NM:
        return CPA_KG_PER_CM2_BY_NM[process_nm], f"{CPA_SOURCE}, {process_nm:g} nm"
    if process_nm < nodes[0] or process_nm > nodes[-1]:
        near = nodes[0] if process_nm < nodes[0] else nodes[-1]
        return (CPA_KG_PER_CM2_BY_NM[near],
                f"{CPA_SOURCE}, {process_nm:g} nm clamped to the {near:g} nm entry")
    hi = min(n for n in nodes if n > process_nm)
    lo = max(n for n in nodes if n < process_nm)
    t = (process_nm - lo) / (hi - lo)
    value = CPA_KG_PER_CM2_BY_NM[lo] + t * (CPA_KG_PER_CM2_BY_NM[hi] - CPA_KG_PER_CM2_BY_NM[lo])
    return value, f"{CPA_SOURCE}, {process_nm:g} nm interpolated between {lo:g} and {hi:g} nm"


def act_cpa_kg_per_cm2(*, epa_kwh_per_cm2: float, fab_g_per_kwh: float, gpa_g_per_cm2: float,
                       mpa_g_per_cm2: float, fab_yield_frac: float) -> float:
    """ACT (Gupta et al., ISCA 2022) carbon per die area: (CI_fab x EPA + GPA + MPA) / Y.

    Inputs in ACT's units (kWh/cm2, g/kWh, g/cm2); returns kgCO2/cm2, usable as
    ``carbon.cpa_kg_per_cm2``.
    """
    for name, v in (("epa", epa_kwh_per_cm2), ("ci_fab", fab_g_per_kwh),
                    ("gpa", gpa_g_per_cm2), ("mpa", mpa_g_per_cm2)):
        if v < 0:
            raise ValueError(f"ACT {name} must be >= 0, got {v}")
    if not 0 < fab_yield_frac <= 1:
        raise ValueError(f"ACT fab yield must be in (0, 1], got {fab_yield_frac}")
    g_per_cm2 = (fab_g_per_kwh * epa_kwh_per_cm2 + gpa_g_per_cm2 + mpa_g_per_cm2) / fab_yield_frac
    return g_per_cm2 / 1000.0


def die_carbon_kg(area_mm2: float, cpa_kg_per_cm2: float) -> float:
    """Carbon of one die: area x CPA (ACT's E_SoC without packaging)."""
    if area_mm2 < 0:
        raise ValueError(f"die area must be >= 0, got {area_mm2}")
    return area_mm2 / 100.0 * cpa_kg_per_cm2


def hardware_kg(gpu: GPUConfig, host: HostConfig,
                cfg: CarbonConfig) -> tuple[dict[str, float], list[Constant]]:
    """Embodied carbon of each component inside the boundary (kgCO2, not amortized)."""
    if cfg.boundary is Boundary.SERVER_SHARE:
        return {"server_share": cfg.gpu_kg or 0.0}, [Constant(
            name="server_share_kg", value=cfg.gpu_kg, unit="kgCO2",
            source=cfg.source_of("gpu_kg"))]
    consts: list[Constant] = []
    if cfg.boundary is Boundary.DIE:
        cpa, cpa_src = ((cfg.cpa_kg_per_cm2, cfg.source_of("cpa_kg_per_cm2"))
                        if cfg.cpa_kg_per_cm2 is not None else cpa_by_node(gpu.process_nm))
        gpu_kg = die_carbon_kg(gpu.die_area_mm2, cpa) + cfg.gpu_package_kg
        consts += [Constant(name="gpu_die_area_mm2", value=gpu.die_area_mm2, unit="mm2",
                            source=f"gpu config {gpu.name}"),
                   Constant(name="cpa_kg_per_cm2", value=cpa, unit="kgCO2/cm2", source=cpa_src),
                   Constant(name="gpu_package_kg", value=cfg.gpu_package_kg, unit="kgCO2",
                            source=cfg.source_of("gpu_package_kg"))]
    else:
        gpu_kg = cfg.gpu_kg or 0.0
        consts.append(Constant(name="gpu_card_kg", value=gpu_kg, unit="kgCO2",
                               source=cfg.source_of("gpu_kg")))
    dram_gb = host.dram_gib * GIB / GB
    share = cfg.host_share_frac
    consts += [Constant(name="dram_kg_per_gb", value=cfg.dram_kg_per_gb, unit="kgCO2/GB",
                        source=cfg.source_of("dram_kg_per_gb")),
               Constant(name="ssd_kg_per_gb", value=cfg.ssd_kg_per_gb, unit="kgCO2/GB",
                        source=cfg.source_of("ssd_kg_per_gb")),
               Constant(name="host_kg", value=cfg.host_kg, unit="kgCO2", source=cfg.source_of("host_kg")),
               Constant(name="host_share_frac", value=share, unit="",
                        source=cfg.source_of("host_share_frac") + " (DRAM, SSD, host)")]
    return {"gpu": gpu_kg, "dram": share * dram_gb * cfg.dram_kg_per_gb,
            "ssd": share * host.ssd.capacity_gb * cfg.ssd_kg_per_gb,
            "host": share * cfg.host_kg}, consts


def embodied_g(runtime_s: float, gpu: GPUConfig, host: HostConfig,
               cfg: CarbonConfig) -> tuple[dict[str, float], list[Constant]]:
    """Embodied carbon charged to a run of ``runtime_s`` (g), by component."""
    kg, consts = hardware_kg(gpu, host, cfg)
    consts += [Constant(name="embodied_boundary", value=cfg.boundary.value, unit="",
                        source=cfg.source_of("boundary")),
               Constant(name="lifetime_years", value=cfg.lifetime_years, unit="years",
                        source=cfg.source_of("lifetime_years") + " (365-day years)"),
               Constant(name="reused_hardware", value=cfg.reused_hardware, unit="",
                        source=cfg.source_of("reused_hardware"))]
    if cfg.reused_hardware:  # already deployed: no incremental embodied carbon
        return {k: 0.0 for k in kg}, consts
    frac = runtime_s / cfg.lifetime_s
    return {k: v * 1000.0 * frac for k, v in kg.items()}, consts
