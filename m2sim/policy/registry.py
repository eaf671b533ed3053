"""Registries: config type -> policy class, and the builders that wire a run's policies.

Implementations are looked up by ``type(cfg)`` (no ``_target_`` strings); adding a policy is a
new file plus one line here and a YAML option under ``conf/policy/<role>/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np

from m2sim.policy.all_in_dram import AllInDram, AllInDramConfig
from m2sim.policy.atu import ATU, ATUConfig
from m2sim.policy.dram import DramCache, DramCacheConfig
from m2sim.policy.hbm import HBMCacheConfig, HBMCachePolicy
from m2sim.policy.layer_lru import LayerLRU, LayerLRUConfig
from m2sim.policy.layer_window import LayerWindow, LayerWindowConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.lru import LRU, LRUConfig, WindowConfig
from m2sim.policy.neuron_window import NeuronWindow, NeuronWindowConfig
from m2sim.policy.preload import (
    LayerLookahead,
    LayerLookaheadConfig,
    NeuronLookahead,
    NeuronLookaheadConfig,
    OnDemandConfig,
    PreloadConfig,
    Preloader,
    preload_depth,
)
from m2sim.policy.records import BandedSet
from m2sim.policy.static_hot import StaticHot, StaticHotConfig
from m2sim.policy.streaming import Resident, ResidentConfig, Streaming, StreamingConfig

HBM_CACHES = {
    ATUConfig: ATU,
    LRUConfig: LRU,
    WindowConfig: LRU,
    StaticHotConfig: StaticHot,
    StreamingConfig: Streaming,
    ResidentConfig: Resident,
}


def hbm_demand_bytes(cfg: HBMCacheConfig, layout: NeuronLayout) -> Optional[int]:
    """HBM the FFN cache reserves for all layers; ``None``: fill what dense placement leaves."""
    return HBM_CACHES[type(cfg)].demand_bytes(cfg, layout)


def build_hbm_cache(cfg: HBMCacheConfig, layout: NeuronLayout, *, capacity_bytes: int,
                    frequency: Callable[[int], np.ndarray]) -> HBMCachePolicy:
    if isinstance(cfg, (LRUConfig, WindowConfig)):
        return LRU.from_config(cfg, layout)
    if isinstance(cfg, StaticHotConfig):
        return StaticHot(cfg, layout, capacity_bytes=capacity_bytes, frequency=frequency)
    return HBM_CACHES[type(cfg)](cfg, layout)


def dram_window_layers(dram: DramCacheConfig, preload: PreloadConfig) -> int:
    """Layers the dynamic DRAM area must hold: the one computing plus the look-ahead."""
    if isinstance(dram, LayerWindowConfig) and dram.window_layers is not None:
        return dram.window_layers
    return preload_depth(preload) + 1


def dram_min_bytes(dram: DramCacheConfig, preload: PreloadConfig, *, num_layers: int,
                   layer_bytes: int, layout: NeuronLayout) -> int:
    """The smallest DRAM FFN area the policy can run in."""
    if isinstance(dram, LayerWindowConfig):
        fixed = dram.fixed_layers or 0
        return (fixed + dram_window_layers(dram, preload)) * layer_bytes
    if isinstance(dram, LayerLRUConfig):
        return (dram.capacity_layers or 1) * layer_bytes
    if isinstance(dram, AllInDramConfig):
        return num_layers * layer_bytes
    if isinstance(dram, NeuronWindowConfig):
        return layout.total_active_unit_bytes()
    raise TypeError(f"unknown DRAM cache config {type(dram).__name__}")


def build_dram_cache(dram: DramCacheConfig, preload: PreloadConfig, layout: NeuronLayout, *,
                     area_bytes: int, layer_bytes: int) -> DramCache:
    L = layout.num_layers
    fits = area_bytes // layer_bytes if layer_bytes else L
    if isinstance(dram, LayerWindowConfig):
        window = dram_window_layers(dram, preload)
        fixed = dram.fixed_layers if dram.fixed_layers is not None else max(0, fits - window)
        return LayerWindow(num_layers=L, fixed_layers=min(fixed, L), window_layers=window,
                           layer_bytes=layer_bytes, id_bytes=layout.id_bytes,
                           num_ids=layout.num_ids)
    if isinstance(dram, LayerLRUConfig):
        cap = dram.capacity_layers if dram.capacity_layers is not None else max(1, fits)
        return LayerLRU(num_layers=L, capacity_layers=min(cap, L), layer_bytes=layer_bytes)
    if isinstance(dram, AllInDramConfig):
        return AllInDram(num_layers=L, layer_bytes=layer_bytes)
    if isinstance(dram, NeuronWindowConfig):
        return NeuronWindow(dram, layout, capacity_bytes=area_bytes)
    raise TypeError(f"unknown DRAM cache config {type(dram).__name__}")


def build_preloader(cfg: PreloadConfig, dram: DramCache, layout: NeuronLayout, *,
                    layer_read_bytes: int, banded: Callable[[int, int], BandedSet],
                    seed: int) -> Preloader:
    if isinstance(cfg, (LayerLookaheadConfig, OnDemandConfig)):
        return LayerLookahead(cfg, dram, num_layers=layout.num_layers,
                              layer_read_bytes=layer_read_bytes, id_bytes=layout.id_bytes)
    if isinstance(cfg, NeuronLookaheadConfig):
        fixed = getattr(dram, "fixed", 0)
        return NeuronLookahead(cfg, dram, num_layers=layout.num_layers, id_bytes=layout.id_bytes,
                               fixed_layers=fixed, banded=banded, num_ids=layout.num_ids,
                               seed=seed)
    raise TypeError(f"unknown preload config {type(cfg).__name__}")
