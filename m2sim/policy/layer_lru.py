"""Whole layers in DRAM with least-recently-used eviction: the OS page cache under Accelerate's
disk offload, and M2Cache's ablation. Layers are visited cyclically, so once the model exceeds
the capacity, LRU evicts exactly the layer needed soonest and every access misses (thrashing).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from m2sim.errors import check_range
from m2sim.policy.dram import NOTHING_MISSING, DramCacheConfig, Missing
from m2sim.policy.records import IdsByBand


@dataclass
class LayerLRUConfig(DramCacheConfig):
    capacity_layers: Optional[int] = None  # None: as many as the DRAM budget holds

    def __post_init__(self) -> None:
        check_range("policy.dram_cache.capacity_layers", self.capacity_layers, 1, None,
                    optional=True)


class LayerLRU:
    holds_layers = True  # whole layers can be cached

    def __init__(self, *, num_layers: int, capacity_layers: int, layer_bytes: int):
        self.num_layers = num_layers
        self.capacity = capacity_layers
        self.layer_bytes = layer_bytes
        self._lru: OrderedDict[int, None] = OrderedDict()

    def initial_layers(self) -> list[int]:
        return []  # a cold page cache: the prefill's reads warm it

    def contains_layer(self, layer: int) -> bool:
        return layer in self._lru

    def missing(self, layer: int, want: IdsByBand) -> Missing:
        return NOTHING_MISSING if layer in self._lru else Missing(whole_layer=True, ids=want)

    def admit_layer(self, layer: int, token: int) -> list[int]:
        evicted = []
        if layer in self._lru:
            self._lru.move_to_end(layer)
            return evicted
        while len(self._lru) >= self.capacity:
            old, _ = self._lru.popitem(last=False)
            evicted.append(old)
        self._lru[layer] = None
        return evicted

    def admit_ids(self, layer: int, ids: IdsByBand, token: int) -> list[int]:
        raise NotImplementedError("LayerLRU caches whole layers only")

    def touch(self, layer: int, want: IdsByBand, token: int) -> None:
        if layer in self._lru:
            self._lru.move_to_end(layer)

    def resident_bytes(self) -> int:
        return len(self._lru) * self.layer_bytes
