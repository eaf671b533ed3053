"""Two cache-less extremes of the HBM role.

``Streaming`` keeps nothing: every token copies the layer's active set (all neurons when
sparsity is off: ZeRO-Infinity / Accelerate offloading) into a scratch buffer. With sparsity off
the set is known in advance, so the copy can be issued ``prefetch_layers`` ahead.
``Resident`` holds every neuron of every layer at its band's precision (dense, uniform INT4):
nothing is ever loaded, and a model that does not fit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from m2sim.errors import check_range
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.records import EMPTY_IDS, BandedSet, CacheUpdate


@dataclass
class StreamingConfig(HBMCacheConfig):
    prefetch_layers: int = 1  # copy layer l+p during layer l (dense only); 0 = on demand

    def __post_init__(self) -> None:
        check_range("policy.hbm_cache.prefetch_layers", self.prefetch_layers, 0, 8)


@dataclass
class ResidentConfig(HBMCacheConfig):
    pass


class Streaming:
    def __init__(self, cfg: StreamingConfig, layout: NeuronLayout):
        self.cfg = cfg
        self.layout = layout

    @staticmethod
    def demand_bytes(cfg: StreamingConfig, layout: NeuronLayout) -> int:
        # scratch for the layer being computed plus the ones being prefetched
        biggest = max(layout.active_unit_bytes(layer) for layer in range(layout.num_layers))
        return biggest * (1 + cfg.prefetch_layers)

    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate:
        return CacheUpdate(layer=layer, hits=(0, 0, 0), load=want.ids, evicted=0,
                           resident_bytes=0, transient=True)

    def resident_bytes(self) -> int:
        return 0


class Resident:
    def __init__(self, cfg: ResidentConfig, layout: NeuronLayout):
        self.layout = layout
        self._bytes = self.demand_bytes(cfg, layout)

    @staticmethod
    def demand_bytes(cfg: ResidentConfig, layout: NeuronLayout) -> int:
        # every neuron at every precision a band may ask for
        per_id = sum(b for b, f in zip(layout.id_bytes, layout.fracs) if f > 0)
        return layout.num_ids * per_id * layout.num_layers

    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate:
        return CacheUpdate(layer=layer, hits=want.counts, load=(EMPTY_IDS,) * 3, evicted=0,
                           resident_bytes=self._bytes // self.layout.num_layers)

    def resident_bytes(self) -> int:
        return self._bytes
