"""Analytic durations: how long an op takes on a device or link (seconds), shared by the
simulator and by calibration. Roofline for compute (the slower of memory and arithmetic),
latency + bytes / bandwidth for transfers, and the fixed costs real systems pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from m2sim.errors import check_frac, check_nonneg, check_range
from m2sim.hardware import GPUConfig, HostConfig, ProfileHeader, SSDConfig
from m2sim.plan import Compute
from m2sim.types import BANDS


@dataclass
class OverheadConfig:
    """Fixed costs, each a knob that calibration against the real backend sets."""

    kernel_launch_us: float = 5.0  # per GPU kernel
    cache_mgmt_per_layer_us: float = 10.0  # CPU bookkeeping per layer per token (one core)
    cache_mgmt_per_id_ns: float = 20.0  # per id loaded or evicted
    gather_per_id_ns: float = 50.0  # packing one scattered neuron bundle into a staging buffer
    gather_efficiency_frac: float = 0.5  # memcpy bandwidth / DRAM peak
    cpu_efficiency_frac: float = 0.6  # DRAM bandwidth a CPU GEMV achieves / peak
    quantize_ns_per_weight: float = 0.5  # one core quantizing FP16 -> INT8/INT4 while gathering
    # Host-side fixed costs of an executor driven from Python (m2real: interpreter and torch
    # dispatch per op); 0 for the paper's engine, whose kernel launches cover it. A machine
    # profile (real/profile.py) measures them.
    attention_us: float = 0.0  # per attention op (with its norms, RoPE, KV update, residual)
    ffn_us: float = 0.0  # per FFN op
    ffn_band_us: float = 0.0  # per non-empty precision band of an FFN op
    lm_head_us: float = 0.0  # per LM head op (with the token's own bookkeeping)
    layer_us: float = 0.0  # per layer and token: planning and records, on the management core
    # the cache manager's bookkeeping per band touched and per id (slot maps, checks), beside
    # cache_mgmt_*: loads into a cache unit (not scratch) and evictions from it
    unit_load_per_band_us: float = 0.0
    unit_load_per_id_ns: float = 0.0
    evict_per_band_us: float = 0.0
    evict_per_id_ns: float = 0.0
    evict_per_byte_ns: float = 0.0  # an eviction moves rows to keep the pool compact
    # None: FFN kernels index a cache unit directly. A value: an FFN over some of a unit's ids
    # (``Compute.gather``) first copies each band's rows out: this fixed cost per band plus
    # reading and writing their bytes at the device's memory bandwidth (m2real does)
    ffn_gather_per_band_us: Optional[float] = None
    # True: DRAM->HBM loads pack scattered bundles into a staging buffer first (the gather
    # terms of ``mgmt_s``). False: the device is the CPU and a load copies DRAM records straight
    # into the device cache, so the link's bandwidth is the only per-byte cost.
    staged_gather: bool = True
    # Host threads lose time while the SSD reader runs beside them: its I/O threads (and the
    # interpreter lock they take) share cores, caches and the memory bus. The host threads (on
    # a CPU-only profile or with ``sim.single_host_thread``, the one thread that computes,
    # copies and manages; else the management and CPU cores) run at 1 / (1 + this) of full
    # speed while an SSD read is in flight. A profile measures it as the slowdown of a short
    # real decode with the reader busy beside it (``real.microbench.BackgroundReads``).
    ssd_busy_host_slowdown_frac: float = 0.0
    # And the other way round: SSD reads lose bandwidth while a host thread computes (the
    # reader's threads fault in and fill their buffers on the same cores and memory bus). Reads
    # run at 1 / (1 + this) of full speed while a host thread (the same as above) is busy. A
    # profile measures it as the same reader's rate alone over its rate beside the decode.
    host_busy_ssd_slowdown_frac: float = 0.0
    profile: Optional[ProfileHeader] = None  # set on a measured config

    def __post_init__(self) -> None:
        for f in ("kernel_launch_us", "cache_mgmt_per_layer_us", "cache_mgmt_per_id_ns",
                  "gather_per_id_ns", "quantize_ns_per_weight", "attention_us", "ffn_us",
                  "ffn_band_us", "lm_head_us", "layer_us", "unit_load_per_band_us",
                  "unit_load_per_id_ns", "evict_per_band_us", "evict_per_id_ns", "evict_per_byte_ns",
                  "ssd_busy_host_slowdown_frac", "host_busy_ssd_slowdown_frac"):
            check_nonneg(f"sim.overheads.{f}", getattr(self, f))
        check_range("sim.overheads.gather_efficiency_frac", self.gather_efficiency_frac, 0, 1,
                    lo_open=True)
        check_range("sim.overheads.cpu_efficiency_frac", self.cpu_efficiency_frac, 0, 1,
                    lo_open=True)
        check_frac("sim.overheads.cpu_efficiency_frac", self.cpu_efficiency_frac)
        check_nonneg("sim.overheads.ffn_gather_per_band_us", self.ffn_gather_per_band_us,
                     optional=True)


def transfer_s(nbytes: float, bytes_per_s: float, latency_s: float) -> float:
    """One copy on a link: setup latency plus bytes over bandwidth."""
    return latency_s + nbytes / bytes_per_s


def ssd_read_s(nbytes: float, num_requests: int, ssd: SSDConfig, bytes_per_s: float) -> float:
    """``num_requests`` reads totalling ``nbytes``: latencies overlap ``queue_depth`` wide."""
    waves = -(-num_requests // ssd.queue_depth)
    return waves * ssd.read_latency_s + nbytes / bytes_per_s


def gpu_roofline(op: Compute, gpu: GPUConfig, ov: OverheadConfig) -> tuple[float, bool]:
    """(seconds, memory_bound): max(bytes / bandwidth, FLOPs / throughput) + kernel launches,
    plus separate dequantization passes and the host's fixed cost of the op, where set."""
    mem_s = (op.weight_bytes + op.other_bytes) / gpu.memory_bytes_per_s
    flops_s = op.other_flops / gpu.matmul_flops_per_s(BANDS[0])
    pass_s = 0.0
    ffn = op.what in ("ffn", "ffn_cold")  # neuron bands; dense weights are in the compute dtype
    for p, w in zip(BANDS, op.weights):
        if w:
            flops_s += 2.0 * w * op.tokens / gpu.matmul_flops_per_s(p)
            flops_s += w * gpu.dequant_ops_per_weight(p) / gpu.alu_ops_per_s
            if ffn:
                pass_s += w * (gpu.dequant_pass_ns_per_weight(p) or 0.0) * 1e-9
    fixed_s = op.num_kernels * ov.kernel_launch_us * 1e-6 + op_fixed_s(op, ov)
    if op.gather and ov.ffn_gather_per_band_us is not None:
        bands = sum(1 for w in op.weights if w)
        fixed_s += (bands * ov.ffn_gather_per_band_us * 1e-6
                    + 2 * op.weight_bytes / gpu.memory_bytes_per_s)
    return max(mem_s, flops_s) + pass_s + fixed_s, mem_s >= flops_s


def op_fixed_s(op: Compute, ov: OverheadConfig) -> float:
    """The host's fixed cost of issuing ``op`` (``OverheadConfig.attention_us`` etc.)."""
    if op.what == "attention":
        return ov.attention_us * 1e-6
    if op.what in ("ffn", "ffn_cold"):
        return (ov.ffn_us + ov.ffn_band_us * sum(1 for w in op.weights if w)) * 1e-6
    if op.what == "lm_head":
        return ov.lm_head_us * 1e-6
    return 0.0


def gpu_compute_s(op: Compute, gpu: GPUConfig, ov: OverheadConfig) -> float:
    """Roofline time of a GPU op (see ``gpu_roofline``)."""
    return gpu_roofline(op, gpu, ov)[0]


def cpu_compute_s(op: Compute, host: HostConfig, ov: OverheadConfig) -> float:
    """A CPU GEMV over DRAM-resident weights (PowerInfer's cold neurons)."""
    mem_s = (op.weight_bytes + op.other_bytes) / (host.dram_bytes_per_s * ov.cpu_efficiency_frac)
    ops = op.other_flops + sum(2.0 * w * op.tokens for w in op.weights)
    ops += op.weights[1] * 2.0 + op.weights[2] * 4.0  # dequantization on the CPU
    return max(mem_s, ops / host.cpu_flops_per_s)


def mgmt_s(num_ids_changed: int, num_ids_gathered: int, gather_bytes: int, host: HostConfig,
           ov: OverheadConfig, weights_quantized: int = 0,
           unit_loads: tuple[int, ...] = (), evictions: tuple[int, ...] = (),
           evicted_bytes: int = 0) -> float:
    """Cache bookkeeping, gathering scattered neurons and on-the-fly quantization, on the
    single management core."""
    bookkeeping = ov.cache_mgmt_per_layer_us * 1e-6 + num_ids_changed * ov.cache_mgmt_per_id_ns * 1e-9
    for n, band_us, id_ns in ((unit_loads, ov.unit_load_per_band_us, ov.unit_load_per_id_ns),
                              (evictions, ov.evict_per_band_us, ov.evict_per_id_ns)):
        bookkeeping += sum(1 for c in n if c) * band_us * 1e-6 + sum(n) * id_ns * 1e-9
    bookkeeping += evicted_bytes * ov.evict_per_byte_ns * 1e-9
    gather = 0.0
    if num_ids_gathered and ov.staged_gather:
        gather = (gather_bytes / (host.dram_bytes_per_s * ov.gather_efficiency_frac)
                  + num_ids_gathered * ov.gather_per_id_ns * 1e-9)
    return bookkeeping + gather + weights_quantized * ov.quantize_ns_per_weight * 1e-9
