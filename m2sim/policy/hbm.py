"""The HBM neuron-cache role: a per-layer cache unit of FFN neurons on the GPU.

Every policy of the ``policy/hbm_cache`` group implements ``HBMCachePolicy``: given the banded
active set of a (token, layer) it returns a ``CacheUpdate`` (hits, ids to load per band,
evictions). Each policy class also has ``demand_bytes(cfg, layout)``: the HBM it reserves for
all layers, or ``None`` for "whatever dense-weight placement leaves" (PowerInfer's hot set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from m2sim.policy.records import BandedSet, CacheUpdate


@dataclass
class HBMCacheConfig:
    """Base of the ``policy/hbm_cache`` group."""


class HBMCachePolicy(Protocol):
    def update(self, token: int, layer: int, want: BandedSet) -> CacheUpdate: ...

    def resident_bytes(self) -> int:
        """Bytes held by all cache units now."""
        ...
