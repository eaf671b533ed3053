"""M2Cache's layer-aware DRAM cache (paper §5.4): a *fixed area* pins the first n layers (every
token restarts at layer 0) and a *dynamic area* is a FIFO over the layers just ahead.

The dynamic area holds whole layers (whole-layer preloading) or, for the rejected neuron-level
preloader, the predicted neurons of a layer. The window must hold the layer being computed plus
the preload depth, so ``window_layers`` defaults to depth + 1. Admitting a layer into a full
window drops the layer needed furthest ahead in the cyclic layer order -- the one just computed,
which in steady state is the FIFO's oldest -- so reads ahead admitted early (e.g. during
prefill) never push out the layer in use or one about to be used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from m2sim.errors import check_range
from m2sim.policy.dram import NOTHING_MISSING, DramCacheConfig, Missing, ids_bytes
from m2sim.policy.records import IdsByBand


@dataclass
class LayerWindowConfig(DramCacheConfig):
    fixed_layers: Optional[int] = None  # None: as many as the DRAM budget holds
    window_layers: Optional[int] = None  # None: preload depth + 1

    def __post_init__(self) -> None:
        check_range("policy.dram_cache.fixed_layers", self.fixed_layers, 0, None, optional=True)
        check_range("policy.dram_cache.window_layers", self.window_layers, 1, None,
                    optional=True)


class LayerWindow:
    holds_layers = True  # whole layers can be cached

    def __init__(self, *, num_layers: int, fixed_layers: int, window_layers: int,
                 layer_bytes: int, id_bytes: tuple[int, int, int], num_ids: int):
        self.num_layers = num_layers
        self.fixed = min(fixed_layers, num_layers)
        self.window = window_layers
        self.layer_bytes = layer_bytes
        self.id_bytes = id_bytes
        self.num_ids = num_ids
        # dynamic area: layer -> None (whole layer) or (3, num_ids) bool mask of held neurons
        self._fifo: OrderedDict[int, Optional[np.ndarray]] = OrderedDict()
        self._current = 0  # the layer being computed (set by ``touch``)

    def initial_layers(self) -> list[int]:
        return list(range(self.fixed))

    def contains_layer(self, layer: int) -> bool:
        return layer < self.fixed or (layer in self._fifo and self._fifo[layer] is None)

    def missing(self, layer: int, want: IdsByBand) -> Missing:
        if self.contains_layer(layer):
            return NOTHING_MISSING
        if layer not in self._fifo:
            return Missing(whole_layer=True, ids=want)
        held = self._fifo[layer]
        return Missing(whole_layer=False,
                       ids=tuple(ids[~held[b, ids]] for b, ids in enumerate(want)))

    def _make_room(self, layer: int) -> list[int]:
        """Drop the held layer needed furthest in the future (the one computed most recently:
        in steady state, the oldest admission -- a FIFO), never the layer in use."""
        evicted = []
        if layer not in self._fifo:
            while len(self._fifo) >= self.window:
                old = max(self._fifo, key=self._until_needed)
                del self._fifo[old]
                evicted.append(old)
        return evicted

    def _until_needed(self, layer: int) -> int:
        """Layers from the one in use until ``layer`` is needed again (cyclic)."""
        return (layer - self._current) % self.num_layers

    def admit_layer(self, layer: int, token: int) -> list[int]:
        if layer < self.fixed:
            return []
        evicted = self._make_room(layer)
        self._fifo[layer] = None
        return evicted

    def admit_ids(self, layer: int, ids: IdsByBand, token: int) -> list[int]:
        if self.contains_layer(layer):
            return []
        evicted = self._make_room(layer)
        mask = self._fifo.get(layer)
        if mask is None:
            mask = np.zeros((3, self.num_ids), dtype=bool)
            self._fifo[layer] = mask
        for b, x in enumerate(ids):
            mask[b, x] = True
        return evicted

    def touch(self, layer: int, want: IdsByBand, token: int) -> None:
        self._current = layer  # the layer in use: evictions count distances from it

    def resident_bytes(self) -> int:
        total = self.fixed * self.layer_bytes
        for mask in self._fifo.values():
            if mask is None:
                total += self.layer_bytes
            else:
                total += int((mask.sum(axis=1) * np.array(self.id_bytes)).sum())
        return total

    def held_ids_bytes(self, ids: IdsByBand) -> int:
        return ids_bytes(ids, self.id_bytes)
