"""What a run did, in the terms the power model charges: busy times, resident memory, bytes moved.

Built by the simulator from its timeline or by ``real/`` from a measured run. Times are seconds,
memory integrals GB x s (GB = 1e9 bytes), byte counts plain bytes. GPU states are disjoint
slices of the runtime; the rest of the runtime the GPU idles.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from m2sim.errors import ConfigError, check_nonneg, check_range

_SLACK = 1e-9  # relative tolerance on "sums of busy times fit in the runtime" (float sums)


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """What a run did (from the simulator's timeline or a real run)."""

    runtime_s: float
    start_hour: float = 0.0  # wall-clock hour of day the run starts (for profiles)
    gpu_busy_compute_s: float  # GPU busy in compute-bound kernels
    gpu_busy_memory_s: float  # GPU busy in memory-bound kernels
    gpu_wait_io_s: float  # GPU idle because it waits for transfers
    cpu_busy_core_s: float  # sum over cores of busy seconds (cache management + CPU compute)
    dram_resident_gb_s: float  # integral of resident DRAM GB over time (GB*s)
    dram_bytes_moved: int
    ssd_active_s: float
    pcie_bytes_moved: int
    num_tokens: int

    def __post_init__(self) -> None:
        for f in fields(self):
            check_nonneg(f"activity.{f.name}", getattr(self, f.name))
        check_range("activity.start_hour", self.start_hour, 0, 24, hi_open=True)
        limit = self.runtime_s * (1 + _SLACK)
        gpu_s = self.gpu_busy_compute_s + self.gpu_busy_memory_s + self.gpu_wait_io_s
        if gpu_s > limit:
            raise ConfigError("activity.gpu_wait_io_s", f"GPU compute + memory + wait-I/O time "
                              f"{gpu_s} s exceeds runtime_s {self.runtime_s} s")
        check_range("activity.ssd_active_s", self.ssd_active_s, 0, limit)

    @property
    def gpu_idle_s(self) -> float:
        busy = self.gpu_busy_compute_s + self.gpu_busy_memory_s + self.gpu_wait_io_s
        return max(0.0, self.runtime_s - busy)

    @property
    def ssd_idle_s(self) -> float:
        return max(0.0, self.runtime_s - self.ssd_active_s)
