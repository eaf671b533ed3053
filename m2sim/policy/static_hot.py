"""Static hot set (PowerInfer-style): the most frequently active neurons of each layer are
placed on the GPU once, by offline profiling; the rest ("cold") are never cached.

Cold active neurons are computed on the CPU from DRAM (``cold_on_cpu``, PowerInfer) or copied
to a GPU scratch buffer for this token only. Hot neurons are stored at one ``precision``; an
active neuron whose band differs from it counts as cold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from m2sim.errors import check_positive
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.records import EMPTY_IDS, BandedSet, CacheUpdate
from m2sim.types import BANDS, Precision

GIB = 2**30


@dataclass
class StaticHotConfig(HBMCacheConfig):
    capacity_gib: Optional[float] = None  # None: all HBM the dense placement leaves
    precision: Precision = Precision.FP16  # precision the hot neurons are stored at
    cold_on_cpu: bool = True  # PowerInfer: cold neurons run on the CPU, not copied

    def __post_init__(self) -> None:
        check_positive("policy.hbm_cache.capacity_gib", self.capacity_gib, optional=True)


class StaticHot:
    def __init__(self, cfg: StaticHotConfig, layout: NeuronLayout, *, capacity_bytes: int,
                 frequency: Callable[[int], np.ndarray]):
        self.cfg = cfg
        self.layout = layout
        self.band = BANDS.index(cfg.precision)
        per_id = layout.id_bytes[self.band]
        # Hot budget spread over layers in proportion to their active-set size.
        weights = np.array(layout.max_active, dtype=np.float64)
        share = weights / weights.sum()
        self._hot = np.zeros((layout.num_layers, layout.num_ids), dtype=bool)
        self._bytes = 0
        for layer in range(layout.num_layers):
            n_hot = min(int(capacity_bytes * share[layer]) // per_id, layout.num_ids)
            if n_hot:
                freq = frequency(layer)
                hot = np.argsort(-freq, kind="stable")[:n_hot]
                self._hot[layer, hot] = True
            self._bytes += n_hot * per_id
        self.hot_count = self._hot.sum(axis=1)

    @staticmethod
    def demand_bytes(cfg: StaticHotConfig, layout: NeuronLayout) -> Optional[int]:
        return None if cfg.capacity_gib is None else int(cfg.capacity_gib * GIB)

    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate:
        hot = self._hot[layer]
        hits = [0, 0, 0]
        cold = []
        for b, ids in enumerate(want.ids):
            if b == self.band:
                is_hot = hot[ids]
                hits[b] = int(np.count_nonzero(is_hot))
                cold.append(ids[~is_hot])
            else:
                cold.append(ids)
        cold_t = tuple(cold)
        unit = int(self.hot_count[layer]) * self.layout.id_bytes[self.band]
        if self.cfg.cold_on_cpu:
            return CacheUpdate(layer=layer, hits=tuple(hits), load=(EMPTY_IDS,) * 3, evicted=0,
                               resident_bytes=unit, offload=cold_t)
        return CacheUpdate(layer=layer, hits=tuple(hits), load=cold_t, evicted=0,
                           resident_bytes=unit, transient=True)

    def resident_bytes(self) -> int:
        return self._bytes

    def hot_ids(self, layer: int) -> np.ndarray:
        """The ids placed on the GPU for ``layer`` (stored at ``cfg.precision``)."""
        return np.flatnonzero(self._hot[layer]).astype(np.int32)
