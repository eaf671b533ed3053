"""Decisions as data: what policies return and executors carry out.

Per-band tuples are indexed like ``m2sim.types.BANDS`` (FP16, INT8, INT4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

IdsByBand = tuple[np.ndarray, np.ndarray, np.ndarray]
EMPTY_IDS = np.empty(0, dtype=np.int32)


@dataclass(frozen=True, slots=True, kw_only=True)
class BandedSet:
    """The active ids of one (token, layer), split by the precision they run at."""

    ids: IdsByBand

    @property
    def counts(self) -> tuple[int, int, int]:
        return (len(self.ids[0]), len(self.ids[1]), len(self.ids[2]))

    @property
    def size(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheUpdate:
    """What the HBM neuron cache does for one (token, layer).

    ``load`` ids are copied DRAM->HBM per band; if ``transient`` they go to a scratch buffer
    and are dropped after the layer. ``evict`` ids leave the cache unit (applied before the
    loads). ``offload`` ids are computed on the CPU instead.
    """

    layer: int
    hits: tuple[int, int, int]
    load: IdsByBand
    evicted: int
    evict: Optional[IdsByBand] = None
    resident_bytes: int  # this layer's cache unit after the update
    transient: bool = False
    offload: Optional[IdsByBand] = None

    @property
    def load_counts(self) -> tuple[int, int, int]:
        return (len(self.load[0]), len(self.load[1]), len(self.load[2]))


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRead:
    """A read from SSD into DRAM: a whole layer, or scattered neuron bundles of one layer."""

    layer: int
    nbytes: int
    num_requests: int
    prefetch: bool
    ids: Optional[IdsByBand] = None  # neuron-level reads only
    evict_layers: tuple[int, ...] = ()  # layers the DRAM cache dropped to make room
