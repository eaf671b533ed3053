"""Byte accounting of one memory tier: budget enforcement plus the counters every tier reports.

``TierMeter`` is thread-safe (I/O threads fill DRAM while the main thread reads it). It never
decides anything: ``reserve`` raises ``BudgetExceeded`` when the caller asks for more than the
budget, because choosing what to evict is the policy's job (``m2sim.policy``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from m2sim.errors import M2SimError


class BudgetExceeded(M2SimError, RuntimeError):
    """A put/load would take a tier over its byte budget (the policy should have evicted)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TierStats:
    """Counters of one tier since it was built."""

    name: str
    bytes_moved: int  # bytes written into this tier (for the SSD: bytes read from it)
    io_bytes: int  # bytes actually transferred (SSD: aligned, coalesced spans; else bytes_moved)
    num_reads: int  # transfer requests (SSD: read syscalls after coalescing; caches: puts)
    num_hits: int  # ids or layers found when looked up
    num_misses: int
    current_bytes: int  # bytes held now (SSD: bytes of read buffers in flight)
    peak_bytes: int
    capacity_bytes: Optional[int]  # None: unbounded


class TierMeter:
    """Thread-safe counters and an optional hard byte budget."""

    def __init__(self, name: str, capacity_bytes: Optional[int] = None):
        if capacity_bytes is not None and capacity_bytes < 0:
            raise ValueError(f"{name}: capacity_bytes must be >= 0, got {capacity_bytes}")
        self.name = name
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._moved = self._io = self._reads = self._hits = self._misses = 0
        self._current = self._peak = 0

    @property
    def current_bytes(self) -> int:
        return self._current

    def free_bytes(self) -> Optional[int]:
        return None if self.capacity_bytes is None else self.capacity_bytes - self._current

    def reserve(self, nbytes: int, what: str = "") -> None:
        """Account ``nbytes`` more held bytes, or raise ``BudgetExceeded`` and change nothing."""
        with self._lock:
            new = self._current + nbytes
            if self.capacity_bytes is not None and new > self.capacity_bytes:
                raise BudgetExceeded(
                    f"{self.name}: {what or 'put'} needs {nbytes} bytes, holds "
                    f"{self._current} of {self.capacity_bytes} (evict first)")
            self._current = new
            self._peak = max(self._peak, new)

    def release(self, nbytes: int) -> None:
        with self._lock:
            if nbytes > self._current:
                raise RuntimeError(f"{self.name}: releasing {nbytes} bytes, holds {self._current}")
            self._current -= nbytes

    def moved(self, nbytes: int, num_reads: int = 1, io_bytes: Optional[int] = None) -> None:
        with self._lock:
            self._moved += nbytes
            self._io += nbytes if io_bytes is None else io_bytes
            self._reads += num_reads

    def looked_up(self, hits: int, misses: int) -> None:
        with self._lock:
            self._hits += hits
            self._misses += misses

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(name=self.name, bytes_moved=self._moved, io_bytes=self._io,
                             num_reads=self._reads,
                             num_hits=self._hits, num_misses=self._misses,
                             current_bytes=self._current, peak_bytes=self._peak,
                             capacity_bytes=self.capacity_bytes)
