"""ATU, Adjacent Token Update (paper §5.3): each layer's cache unit holds exactly the previous
token's active set; a new token loads the (id, band) pairs that changed and evicts the departed.

Hit ratio therefore equals the adjacent-token overlap of the trace (~80%, paper §5.3), and a
neuron that stays active but changes band is a miss at its new precision (m2cache.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.records import BandedSet, CacheUpdate

_BAND_CODES = (1, 2, 3)  # 0 = not resident


@dataclass
class ATUConfig(HBMCacheConfig):
    pass


class ATU:
    def __init__(self, cfg: ATUConfig, layout: NeuronLayout):
        self.layout = layout
        self._code = np.zeros((layout.num_layers, layout.num_ids), dtype=np.int8)
        self._ids = [np.empty(0, np.int32)] * layout.num_layers
        self._codes = [np.empty(0, np.int8)] * layout.num_layers
        self._bytes = [0] * layout.num_layers

    @staticmethod
    def demand_bytes(cfg: ATUConfig, layout: NeuronLayout) -> int:
        return layout.total_active_unit_bytes()

    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate:
        code = self._code[layer]
        hits, loads = [], []
        for ids, c in zip(want.ids, _BAND_CODES):
            hit = code[ids] == c  # resident at this precision already
            hits.append(int(np.count_nonzero(hit)))
            loads.append(ids[~hit])
        prev, prev_codes = self._ids[layer], self._codes[layer]
        code[prev] = 0
        for ids, c in zip(want.ids, _BAND_CODES):
            code[ids] = c
        gone = code[prev] != prev_codes  # departed, or now resident at another precision
        evict = tuple(prev[gone & (prev_codes == c)] for c in _BAND_CODES)
        self._ids[layer] = np.concatenate(want.ids)
        self._codes[layer] = np.repeat(np.array(_BAND_CODES, np.int8), want.counts)
        nbytes = sum(len(ids) * b for ids, b in zip(want.ids, self.layout.id_bytes))
        self._bytes[layer] = nbytes
        return CacheUpdate(layer=layer, hits=tuple(hits), load=tuple(loads),
                           evicted=len(prev) - sum(hits), evict=evict, resident_bytes=nbytes)

    def resident_bytes(self) -> int:
        return sum(self._bytes)
