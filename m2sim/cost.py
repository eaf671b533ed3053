"""Analytic durations: how long an op takes on a device or link (seconds), shared by the
simulator and by calibration. Roofline for compute (the slower of memory and arithmetic),
latency + bytes / bandwidth for transfers, and the fixed costs real systems pay.
"""

from __future__ import annotations

from dataclasses import dataclass

from m2sim.errors import check_frac, check_nonneg, check_range
from m2sim.hardware import GPUConfig, HostConfig, SSDConfig
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

    def __post_init__(self) -> None:
        for f in ("kernel_launch_us", "cache_mgmt_per_layer_us", "cache_mgmt_per_id_ns",
                  "gather_per_id_ns", "quantize_ns_per_weight"):
            check_nonneg(f"sim.overheads.{f}", getattr(self, f))
        check_range("sim.overheads.gather_efficiency_frac", self.gather_efficiency_frac, 0, 1,
                    lo_open=True)
        check_range("sim.overheads.cpu_efficiency_frac", self.cpu_efficiency_frac, 0, 1,
                    lo_open=True)
        check_frac("sim.overheads.cpu_efficiency_frac", self.cpu_efficiency_frac)


def transfer_s(nbytes: float, bytes_per_s: float, latency_s: float) -> float:
    """One copy on a link: setup latency plus bytes over bandwidth."""
    return latency_s + nbytes / bytes_per_s


def ssd_read_s(nbytes: float, num_requests: int, ssd: SSDConfig, bytes_per_s: float) -> float:
    """``num_requests`` reads totalling ``nbytes``: latencies overlap ``queue_depth`` wide."""
    waves = -(-num_requests // ssd.queue_depth)
    return waves * ssd.read_latency_s + nbytes / bytes_per_s


def gpu_roofline(op: Compute, gpu: GPUConfig, ov: OverheadConfig) -> tuple[float, bool]:
    """(seconds, memory_bound): max(bytes / bandwidth, FLOPs / throughput) + kernel launches."""
    mem_s = (op.weight_bytes + op.other_bytes) / gpu.memory_bytes_per_s
    flops_s = op.other_flops / gpu.matmul_flops_per_s(BANDS[0])
    for p, w in zip(BANDS, op.weights):
        if w:
            flops_s += 2.0 * w * op.tokens / gpu.matmul_flops_per_s(p)
            flops_s += w * gpu.dequant_ops_per_weight(p) / gpu.alu_ops_per_s
    return max(mem_s, flops_s) + op.num_kernels * ov.kernel_launch_us * 1e-6, mem_s >= flops_s


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
           ov: OverheadConfig, weights_quantized: int = 0) -> float:
    """Cache bookkeeping, gathering scattered neurons and on-the-fly quantization, on the
    single management core."""
    bookkeeping = ov.cache_mgmt_per_layer_us * 1e-6 + num_ids_changed * ov.cache_mgmt_per_id_ns * 1e-9
    gather = 0.0
    if num_ids_gathered:
        gather = (gather_bytes / (host.dram_bytes_per_s * ov.gather_efficiency_frac)
                  + num_ids_gathered * ov.gather_per_id_ns * 1e-9)
    return bookkeeping + gather + weights_quantized * ov.quantize_ns_per_weight * 1e-9
