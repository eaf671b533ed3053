"""Hardware specs: GPUs, host platforms (DRAM, PCIe slot, SSD, CPU) and the links between tiers.

YAML-facing fields carry human units (``_gib``, ``_gb_per_s``, ``_us``); code reads the SI
properties (``_bytes``, ``_bytes_per_s``, ``_s``). Values come from `conf/gpu` and `conf/host`,
each citing its source (most from ``shared/data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from m2sim.errors import ConfigError, check_positive, check_range
from m2sim.types import Precision

GIB = 2**30
GB = 1e9

# Per-lane, per-direction PCIe bandwidth after line coding (shared/data/links.csv: x16 / 16).
PCIE_GB_PER_S_PER_LANE = {1: 0.25, 2: 0.5, 3: 0.984, 4: 1.969, 5: 3.938, 6: 7.563}

# Extra ALU operations per weight to dequantize before the FMA (unpack, convert, scale).
DEQUANT_OPS_PER_WEIGHT = {Precision.FP16: 0.0, Precision.INT8: 2.0, Precision.INT4: 4.0}

# Version of the header a machine profile (real/profile.py) writes into its configs; a profile
# with another version was measured and fitted by other code and is refused.
PROFILE_SCHEMA_VERSION = 1


def pcie_gb_per_s(gen: int, lanes: int) -> float:
    return PCIE_GB_PER_S_PER_LANE[gen] * lanes


@dataclass
class ProfileHeader:
    """Where a measured hardware config comes from: ``python -m real.profile`` writes it into
    the ``gpu``, ``host`` and ``overheads`` configs of the machine it measured."""

    schema_version: int = MISSING
    machine: str = MISSING  # identity: CPU model, logical CPUs, memory, accelerator
    date: str = MISSING  # ISO date and time of the measurement
    device: str = "cpu"  # torch device the kernels ran on ("cpu": the CPU acts as the GPU)
    dtype: str = "float32"  # dense dtype of the real backend when measured (real.dtype)
    torch_threads: int = 1
    # shapes of the model the kernels and fixed costs were measured at
    model: str = MISSING
    num_layers: int = MISSING
    d_model: int = MISSING
    d_ff: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    vocab_size: int = MISSING

    def __post_init__(self) -> None:
        if self.schema_version != PROFILE_SCHEMA_VERSION:
            raise ConfigError("profile.schema_version",
                              f"got {self.schema_version}, this m2sim reads profile schema "
                              f"{PROFILE_SCHEMA_VERSION} (allowed: {PROFILE_SCHEMA_VERSION}); "
                              f"measure the machine again with `python -m real.profile`")

    @property
    def shapes(self) -> tuple[int, ...]:
        return model_shapes(self)


def model_shapes(m) -> tuple[int, ...]:
    """(layers, d_model, d_ff, heads, kv heads, vocab) of a ``ModelConfig`` or a profile."""
    return (m.num_layers, m.d_model, m.d_ff, m.num_heads, m.num_kv_heads, m.vocab_size)


def check_profile(header: Optional[ProfileHeader], *, field: str, machine: str,
                  model=None) -> None:
    """Refuse a profile measured on another machine or at other model shapes than ``model``
    (a ``ModelConfig``): its fixed costs would be silently wrong here."""
    if header is None:
        raise ConfigError(f"{field}.profile", "is missing: this config was not measured on a "
                          "machine (write one with `python -m real.profile`)")
    if header.machine != machine:
        raise ConfigError(f"{field}.profile.machine",
                          f"the profile was measured on {header.machine!r} but this machine is "
                          f"{machine!r} (allowed: a profile of this machine)")
    if model is not None:
        want = model_shapes(model)
        if header.shapes != want:
            raise ConfigError(f"{field}.profile.model",
                              f"measured at {header.model} shapes (layers, d_model, d_ff, heads, "
                              f"kv heads, vocab) = {header.shapes} but model={model.name} has "
                              f"{want} (allowed: a profile of the same shapes)")


@dataclass
class GPUConfig:
    """One GPU model. Peak rates are datasheet figures; efficiency factors derate them."""

    name: str = MISSING
    memory_gib: float = MISSING
    memory_bandwidth_gb_per_s: float = MISSING
    fp32_tflops: float = MISSING
    fp16_tflops: float = MISSING  # dense FP16 peak; equals FP32 where there is no fast FP16
    int8_tops: Optional[float] = None  # None: no fast INT8 (DP4A / tensor-core) path
    tdp_w: float = MISSING
    idle_w: float = MISSING
    pcie_gen: int = 3
    pcie_lanes: int = 16
    die_area_mm2: float = MISSING
    process_nm: float = MISSING
    release_year: int = MISSING
    reserved_gib: float = 0.75  # CUDA context, allocator slack, activations workspace
    compute_efficiency_frac: float = 0.5  # achieved / peak FLOP/s for batch-1 kernels
    memory_efficiency_frac: float = 0.8  # achieved / peak memory bandwidth (GEMV)
    # A separate dequantization pass over an FFN band's weights before its GEMV (ns per
    # weight), as an unfused kernel, or m2real on a CPU (to float32), does; None: dequantized
    # inside the GEMV on the ALUs (DEQUANT_OPS_PER_WEIGHT in the roofline). A profile measures
    # them. Dense weights (attention, LM head) stay in the device's compute dtype: no pass.
    fp16_dequant_ns_per_weight: Optional[float] = None
    int8_dequant_ns_per_weight: Optional[float] = None
    int4_dequant_ns_per_weight: Optional[float] = None
    # The "GPU" is the host's CPU (a CPU-only machine's profile): ops the plan puts on the CPU
    # (PowerInfer's cold neurons) run on it too, one after another, with its costs.
    is_host_cpu: bool = False
    profile: Optional[ProfileHeader] = None  # set on a measured config
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("memory_gib", "memory_bandwidth_gb_per_s", "fp32_tflops", "fp16_tflops",
                  "tdp_w", "die_area_mm2", "process_nm"):
            check_positive(f"gpu.{f}", getattr(self, f))
        check_positive("gpu.int8_tops", self.int8_tops, optional=True)
        check_range("gpu.idle_w", self.idle_w, 0, self.tdp_w)
        check_range("gpu.reserved_gib", self.reserved_gib, 0, self.memory_gib, hi_open=True)
        check_range("gpu.compute_efficiency_frac", self.compute_efficiency_frac, 0, 1, lo_open=True)
        check_range("gpu.memory_efficiency_frac", self.memory_efficiency_frac, 0, 1, lo_open=True)
        if self.pcie_gen not in PCIE_GB_PER_S_PER_LANE:
            raise ConfigError("gpu.pcie_gen", f"got {self.pcie_gen} (allowed: 1..6)")
        check_range("gpu.pcie_lanes", self.pcie_lanes, 1, 16)
        for p in Precision:
            check_range(f"gpu.{p.name.lower()}_dequant_ns_per_weight",
                        self.dequant_pass_ns_per_weight(p), 0, None, optional=True)

    def dequant_pass_ns_per_weight(self, precision: Precision) -> Optional[float]:
        """ns per weight of a separate dequantization pass, None if it is fused."""
        return getattr(self, f"{precision.name.lower()}_dequant_ns_per_weight")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    @property
    def usable_bytes(self) -> float:
        return (self.memory_gib - self.reserved_gib) * GIB

    @property
    def memory_bytes_per_s(self) -> float:
        """Achievable memory bandwidth (peak x efficiency)."""
        return self.memory_bandwidth_gb_per_s * GB * self.memory_efficiency_frac

    def matmul_flops_per_s(self, precision: Precision) -> float:
        """Achievable FMA throughput for a weight stored at ``precision``.

        INT8 runs on DP4A/tensor cores where the card has them; otherwise (and always for
        INT4) weights are dequantized and multiplied at the faster of FP16 and FP32.
        """
        if precision is Precision.INT8 and self.int8_tops is not None:
            peak = self.int8_tops
        else:
            peak = max(self.fp16_tflops, self.fp32_tflops)
        return peak * 1e12 * self.compute_efficiency_frac

    def dequant_ops_per_weight(self, precision: Precision) -> float:
        if self.dequant_pass_ns_per_weight(precision) is not None:
            return 0.0  # a separate pass (``dequant_pass_ns_per_weight``) does it
        if precision is Precision.INT8 and self.int8_tops is not None:
            return 0.0  # native INT8 dot products: no per-weight unpacking
        return DEQUANT_OPS_PER_WEIGHT[precision]

    @property
    def alu_ops_per_s(self) -> float:
        """Achievable scalar ALU rate used for dequantization (FP32 pipe)."""
        return self.fp32_tflops * 1e12 * self.compute_efficiency_frac


@dataclass
class SSDConfig:
    """An NVMe drive: sequential bandwidth plus a per-request latency served ``queue_depth`` wide."""

    name: str = MISSING
    capacity_gb: float = MISSING
    seq_read_gb_per_s: float = MISSING
    read_latency_us: float = MISSING  # one QD1 4 KiB random read (1 / QD1 IOPS)
    queue_depth: int = 32  # requests the drive serves concurrently
    # A read with no other read waiting behind it runs at 1 / (1 + this) of full speed: the
    # bandwidth above is the drive's with reads queued back to back, and one read at a time
    # (a demand read, a look-ahead of 1) leaves its parallelism idle. A profile measures it as
    # whole layers read one at a time against the same layers queued.
    lone_read_slowdown_frac: float = 0.0
    active_w: float = 6.0
    idle_w: float = 1.0
    pcie_gen: int = 3
    profile: Optional[ProfileHeader] = None  # set on a measured config
    source: str = ""

    def __post_init__(self) -> None:
        check_positive("host.ssd.capacity_gb", self.capacity_gb)
        check_positive("host.ssd.seq_read_gb_per_s", self.seq_read_gb_per_s)
        check_range("host.ssd.read_latency_us", self.read_latency_us, 0, None)
        check_range("host.ssd.queue_depth", self.queue_depth, 1, 65536)
        check_range("host.ssd.lone_read_slowdown_frac", self.lone_read_slowdown_frac, 0, None)
        check_range("host.ssd.idle_w", self.idle_w, 0, self.active_w)

    @property
    def capacity_bytes(self) -> float:
        return self.capacity_gb * GB

    @property
    def read_bytes_per_s(self) -> float:
        return self.seq_read_gb_per_s * GB

    @property
    def read_latency_s(self) -> float:
        return self.read_latency_us * 1e-6


@dataclass
class HostConfig:
    """The machine around the GPU: DRAM, the GPU's PCIe slot, the SSD and the CPU."""

    name: str = MISSING
    dram_gib: float = MISSING
    dram_bandwidth_gb_per_s: float = MISSING
    os_reserved_gib: float = 4.0  # DRAM the OS, runtime and page tables keep
    pcie_gen: int = MISSING  # generation of the GPU slot (the link runs at min(GPU, slot))
    pcie_lanes: int = 16
    pcie_efficiency_frac: float = 0.82  # sustained/theoretical H2D (FlexGen fit: 12.89 of 15.75)
    gpu_link_latency_us: float = 10.0  # per-transfer setup: cudaMemcpyAsync + sync
    # measured host-to-device bandwidth (a profile); None: from the PCIe generation and lanes
    # of card and slot, derated by pcie_efficiency_frac
    gpu_link_gb_per_s: Optional[float] = None
    gpu_copy_engines: int = 1  # concurrent host-to-device DMA streams
    ssd: SSDConfig = MISSING
    cpu_name: str = ""
    cpu_cores: int = MISSING
    cpu_gflops_per_core: float = MISSING  # achievable FP32 GFLOP/s per core (AVX2/AVX-512)
    cpu_tdp_w: float = MISSING
    cpu_idle_w: float = MISSING
    profile: Optional[ProfileHeader] = None  # set on a measured config
    source: str = ""

    def __post_init__(self) -> None:
        check_positive("host.dram_gib", self.dram_gib)
        check_positive("host.gpu_link_gb_per_s", self.gpu_link_gb_per_s, optional=True)
        check_positive("host.dram_bandwidth_gb_per_s", self.dram_bandwidth_gb_per_s)
        check_range("host.os_reserved_gib", self.os_reserved_gib, 0, self.dram_gib, hi_open=True)
        if self.pcie_gen not in PCIE_GB_PER_S_PER_LANE:
            raise ConfigError("host.pcie_gen", f"got {self.pcie_gen} (allowed: 1..6)")
        check_range("host.pcie_lanes", self.pcie_lanes, 1, 16)
        check_range("host.pcie_efficiency_frac", self.pcie_efficiency_frac, 0, 1, lo_open=True)
        check_range("host.gpu_link_latency_us", self.gpu_link_latency_us, 0, None)
        check_range("host.gpu_copy_engines", self.gpu_copy_engines, 1, 16)
        check_range("host.cpu_cores", self.cpu_cores, 1, 4096)
        check_positive("host.cpu_gflops_per_core", self.cpu_gflops_per_core)
        check_range("host.cpu_idle_w", self.cpu_idle_w, 0, self.cpu_tdp_w)

    @property
    def dram_bytes(self) -> float:
        return self.dram_gib * GIB

    @property
    def dram_bytes_per_s(self) -> float:
        return self.dram_bandwidth_gb_per_s * GB

    @property
    def gpu_link_latency_s(self) -> float:
        return self.gpu_link_latency_us * 1e-6

    def gpu_link_bytes_per_s(self, gpu: GPUConfig) -> float:
        """Sustained host-to-device bandwidth: measured, or the slower of card and slot,
        derated."""
        if self.gpu_link_gb_per_s is not None:
            return self.gpu_link_gb_per_s * GB
        gen = min(gpu.pcie_gen, self.pcie_gen)
        lanes = min(gpu.pcie_lanes, self.pcie_lanes)
        return pcie_gb_per_s(gen, lanes) * GB * self.pcie_efficiency_frac

    def ssd_link_bytes_per_s(self) -> float:
        """SSD read bandwidth, capped by the slot the drive sits in (x4 at the platform's gen)."""
        gen = min(self.ssd.pcie_gen, self.pcie_gen)
        return min(self.ssd.read_bytes_per_s, pcie_gb_per_s(gen, 4) * GB)

    @property
    def cpu_flops_per_s(self) -> float:
        return self.cpu_cores * self.cpu_gflops_per_core * 1e9


