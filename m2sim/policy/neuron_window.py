"""LLM-in-a-flash's DRAM policy: per layer, keep the neurons used in the last ``window_tokens``
tokens (evicting least recently used ones if the DRAM area overflows); neurons that newly become
active are read from flash as individual bundles (one request per id: row-column bundling
stores a neuron's rows and column together).
"""

from __future__ import annotations

from dataclasses import dataclass

from m2sim.errors import check_range
from m2sim.policy.dram import DramCacheConfig, Missing
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.lru import LRU
from m2sim.policy.records import BandedSet, IdsByBand


@dataclass
class NeuronWindowConfig(DramCacheConfig):
    window_tokens: int = 5  # LLM in a flash keeps the last k tokens' neurons (k=5 in its study)

    def __post_init__(self) -> None:
        check_range("policy.dram_cache.window_tokens", self.window_tokens, 1, None)


class NeuronWindow:
    holds_layers = False  # neuron granularity only

    def __init__(self, cfg: NeuronWindowConfig, layout: NeuronLayout, *, capacity_bytes: int):
        per_layer = [capacity_bytes // layout.num_layers] * layout.num_layers
        self._lru = LRU(layout, per_layer, max_age=cfg.window_tokens)

    def initial_layers(self) -> list[int]:
        return []

    def contains_layer(self, layer: int) -> bool:
        return False

    def missing(self, layer: int, want: IdsByBand) -> Missing:
        ids = tuple(x[~self._lru.is_resident(layer, b, x)] for b, x in enumerate(want))
        return Missing(whole_layer=False, ids=ids)

    def admit_layer(self, layer: int, token: int) -> list[int]:
        raise NotImplementedError("NeuronWindow holds neurons, not whole layers")

    def admit_ids(self, layer: int, ids: IdsByBand, token: int) -> list[int]:
        return []  # recorded by ``touch``, which sees the whole active set

    def touch(self, layer: int, want: IdsByBand, token: int) -> None:
        self._lru.update(token, layer, BandedSet(ids=want))

    def resident_bytes(self) -> int:
        return self._lru.resident_bytes()
