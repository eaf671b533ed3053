"""Operational energy: power by component and state, integrated over the run's activity.

GPU: idle, compute-bound, memory-bound and waiting-on-I/O power, each ``idle_w + load_frac x
(tdp_w - idle_w)`` of the GPU config, times the seconds in that state. Host CPU: idle power for
the runtime plus ``(tdp_w - idle_w) / cores`` per busy core-second. DRAM: watts per resident GB
plus joules per byte moved. SSD: active and idle watts. Returns IT energy in joules (no PUE).
"""

from __future__ import annotations

from m2sim.carbon.activity import Activity
from m2sim.carbon.config import CarbonConfig
from m2sim.carbon.report import Constant
from m2sim.errors import ConfigError
from m2sim.hardware import GPUConfig, HostConfig


def gpu_state_w(gpu: GPUConfig, load_frac: float) -> float:
    """GPU board power at ``load_frac`` of the way from idle to TDP."""
    return gpu.idle_w + load_frac * (gpu.tdp_w - gpu.idle_w)


def operational_energy_j(act: Activity, gpu: GPUConfig, host: HostConfig,
                         cfg: CarbonConfig) -> tuple[dict[str, float], list[Constant]]:
    """IT energy per component (J) and the constants used."""
    consts: list[Constant] = []
    energy = {
        "gpu": _gpu_j(act, gpu, cfg, consts),
        "cpu": _cpu_j(act, host, cfg, consts),
        "dram": _dram_j(act, cfg, consts),
        "ssd": _ssd_j(act, host, cfg, consts),
        "pcie": act.pcie_bytes_moved * cfg.pcie_j_per_byte,
    }
    consts.append(Constant(name="pcie_j_per_gb_moved", value=cfg.pcie_j_per_gb_moved,
                           unit="J/GB", source=cfg.source_of("pcie_j_per_gb_moved")))
    return energy, consts


def _gpu_j(act: Activity, gpu: GPUConfig, cfg: CarbonConfig, consts: list[Constant]) -> float:
    src = f"gpu config {gpu.name}: {gpu.source}"
    if not cfg.include_gpu:
        consts.append(Constant(name="gpu_power", value="not counted", unit="",
                               source="carbon.include_gpu=false"))
        return 0.0
    states = [("idle", 0.0, act.gpu_idle_s), ("compute", cfg.gpu_compute_load_frac,
              act.gpu_busy_compute_s), ("memory", cfg.gpu_memory_load_frac, act.gpu_busy_memory_s),
              ("wait_io", cfg.gpu_wait_io_load_frac, act.gpu_wait_io_s)]
    consts += [Constant(name="gpu_idle_w", value=gpu.idle_w, unit="W", source=src),
               Constant(name="gpu_tdp_w", value=gpu.tdp_w, unit="W", source=src)]
    total = 0.0
    for state, frac, seconds in states:
        watts = gpu_state_w(gpu, frac)
        if state != "idle":
            consts.append(Constant(name=f"gpu_{state}_w", value=watts, unit="W",
                                   source=f"idle_w + {frac} x (tdp_w - idle_w); "
                                          + cfg.source_of(f"gpu_{state}_load_frac")))
        total += watts * seconds
    return total


def _cpu_j(act: Activity, host: HostConfig, cfg: CarbonConfig, consts: list[Constant]) -> float:
    if not cfg.include_cpu:
        consts.append(Constant(name="cpu_power", value="not counted", unit="",
                               source="carbon.include_cpu=false"))
        return 0.0
    cap = host.cpu_cores * act.runtime_s * (1 + 1e-9)
    if act.cpu_busy_core_s > cap:
        raise ConfigError("activity.cpu_busy_core_s", f"{act.cpu_busy_core_s} core-s exceeds "
                          f"cpu_cores x runtime_s = {host.cpu_cores * act.runtime_s}")
    src = f"host config {host.name}: {host.source}"
    consts += [Constant(name="cpu_idle_w", value=host.cpu_idle_w, unit="W", source=src),
               Constant(name="cpu_tdp_w", value=host.cpu_tdp_w, unit="W", source=src),
               Constant(name="cpu_cores", value=host.cpu_cores, unit="", source=src)]
    per_core_w = (host.cpu_tdp_w - host.cpu_idle_w) / host.cpu_cores
    return host.cpu_idle_w * act.runtime_s + per_core_w * act.cpu_busy_core_s


def _dram_j(act: Activity, cfg: CarbonConfig, consts: list[Constant]) -> float:
    consts += [Constant(name="dram_w_per_gb", value=cfg.dram_w_per_gb, unit="W/GB resident",
                        source=cfg.source_of("dram_w_per_gb")),
               Constant(name="dram_j_per_gb_moved", value=cfg.dram_j_per_gb_moved, unit="J/GB",
                        source=cfg.source_of("dram_j_per_gb_moved"))]
    return (cfg.dram_w_per_gb * act.dram_resident_gb_s
            + cfg.dram_j_per_byte * act.dram_bytes_moved)


def _ssd_j(act: Activity, host: HostConfig, cfg: CarbonConfig, consts: list[Constant]) -> float:
    ssd_src = f"ssd config {host.ssd.name}: {host.ssd.source}"
    active_w, active_src = ((cfg.ssd_active_w, cfg.source_of("ssd_active_w"))
                            if cfg.ssd_active_w is not None else (host.ssd.active_w, ssd_src))
    idle_w, idle_src = ((cfg.ssd_idle_w, cfg.source_of("ssd_idle_w"))
                        if cfg.ssd_idle_w is not None else (host.ssd.idle_w, ssd_src))
    consts += [Constant(name="ssd_active_w", value=active_w, unit="W", source=active_src),
               Constant(name="ssd_idle_w", value=idle_w, unit="W", source=idle_src)]
    return active_w * act.ssd_active_s + idle_w * act.ssd_idle_s
