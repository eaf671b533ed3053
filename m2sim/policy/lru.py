"""LRU and sliding-window neuron caches: per layer, (id, band) entries with a byte capacity.

``LRU`` evicts the least recently used entries once a layer's unit exceeds its capacity (the
ablation of ATU). ``Window`` (LLM-in-a-flash style, here in HBM) also drops entries unused for
``window_tokens`` tokens. Entries used by the current token are never evicted; ties in recency
are broken by lower precision first, then by id, so decisions are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from m2sim.errors import check_positive, check_range
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.records import BandedSet, CacheUpdate


@dataclass
class LRUConfig(HBMCacheConfig):
    capacity_scale: float = 1.0  # per-layer capacity relative to the ATU unit (the active set)

    def __post_init__(self) -> None:
        check_range("policy.hbm_cache.capacity_scale", self.capacity_scale, 1.0, None)


@dataclass
class WindowConfig(HBMCacheConfig):
    window_tokens: int = 4  # keep neurons used in the last w tokens
    capacity_scale: Optional[float] = None  # None: w x the ATU unit (never binding)

    def __post_init__(self) -> None:
        check_range("policy.hbm_cache.window_tokens", self.window_tokens, 1, None)
        check_positive("policy.hbm_cache.capacity_scale", self.capacity_scale, optional=True)
        check_range("policy.hbm_cache.capacity_scale", self.capacity_scale, 1.0, None,
                    optional=True)


def capacity_scale(cfg: LRUConfig | WindowConfig) -> float:
    if isinstance(cfg, WindowConfig):
        return cfg.capacity_scale if cfg.capacity_scale is not None else float(cfg.window_tokens)
    return cfg.capacity_scale


class LRU:
    """Per-layer LRU over (band, id) entries with a byte capacity and an optional max age."""

    def __init__(self, layout: NeuronLayout, capacity_bytes: Sequence[int],
                 max_age: Optional[int] = None):
        self.layout = layout
        self.max_age = max_age
        self.capacity = list(capacity_bytes)
        # last token each (band, id) was used; -1 = not resident.  (L, 3, N)
        self._last = np.full((layout.num_layers, 3, layout.num_ids), -1, dtype=np.int64)
        self._bytes = [0] * layout.num_layers
        self._id_bytes = np.array(layout.id_bytes, dtype=np.int64)

    @classmethod
    def from_config(cls, cfg: LRUConfig | WindowConfig, layout: NeuronLayout) -> LRU:
        scale = capacity_scale(cfg)
        caps = [int(scale * layout.active_unit_bytes(layer)) for layer in range(layout.num_layers)]
        max_age = cfg.window_tokens if isinstance(cfg, WindowConfig) else None
        return cls(layout, caps, max_age)

    @staticmethod
    def demand_bytes(cfg: LRUConfig | WindowConfig, layout: NeuronLayout) -> int:
        scale = capacity_scale(cfg)
        return sum(int(scale * layout.active_unit_bytes(layer))
                   for layer in range(layout.num_layers))

    def is_resident(self, layer: int, band: int, ids: np.ndarray) -> np.ndarray:
        return self._last[layer, band, ids] >= 0

    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate:
        last = self._last[layer]
        hits, loads = [], []
        for b, ids in enumerate(want.ids):
            hit = last[b, ids] >= 0
            hits.append(int(np.count_nonzero(hit)))
            loads.append(ids[~hit])
            last[b, ids] = token
        nbytes = self._bytes[layer] + sum(len(x) * int(s) for x, s in zip(loads, self._id_bytes))
        gone_band, gone_ids = [], []
        if self.max_age is not None:
            stale = (last >= 0) & (last <= token - self.max_age)
            b, i = np.nonzero(stale)
            gone_band.append(b)
            gone_ids.append(i)
            nbytes -= int(self._id_bytes[b].sum())
            last[stale] = -1
        if nbytes > self.capacity[layer]:
            b, i = self._evict_lru(last, token, nbytes - self.capacity[layer])
            gone_band.append(b)
            gone_ids.append(i)
            nbytes -= int(self._id_bytes[b].sum())
        self._bytes[layer] = nbytes
        band = np.concatenate(gone_band) if gone_band else np.empty(0, np.int64)
        ids = np.concatenate(gone_ids) if gone_ids else np.empty(0, np.int64)
        evict = tuple(ids[band == k].astype(np.int32) for k in range(3))
        return CacheUpdate(layer=layer, hits=tuple(hits), load=tuple(loads),
                           evicted=int(len(ids)), evict=evict, resident_bytes=nbytes)

    def _evict_lru(self, last: np.ndarray, token: int,
                   excess: int) -> tuple[np.ndarray, np.ndarray]:
        """Evict least recently used entries freeing >= ``excess`` bytes; (bands, ids)."""
        band, ids = np.nonzero((last >= 0) & (last < token))
        if len(ids) == 0:
            raise RuntimeError("LRU unit over capacity with every entry in use "
                               "(capacity below the active set)")
        # oldest first; among equals, lower precision (higher band index) first, then id
        order = np.lexsort((ids, -band, last[band, ids]))
        freed = np.cumsum(self._id_bytes[band[order]])
        n = int(np.searchsorted(freed, excess)) + 1
        n = min(n, len(order))
        victims = order[:n]
        last[band[victims], ids[victims]] = -1
        return band[victims], ids[victims]

    def resident_bytes(self) -> int:
        return sum(self._bytes)
