"""The ``policy`` config group: one preset composes a predictor, precision bands, an HBM cache,
a DRAM cache, an SSD preloader and a dense-weight placement (``conf/policy/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from m2sim.errors import check_range
from m2sim.policy.bands import BandsConfig
from m2sim.policy.dram import DramCacheConfig
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.placement import PlacementConfig
from m2sim.policy.preload import PreloadConfig


@dataclass
class PolicyConfig:
    name: str = MISSING
    sparse: bool = True  # decode runs only the predicted-active FFN neurons
    predictor_rank: int = 256  # Deja Vu predictor: Linear(d, r) -> Linear(r, d_ff), per layer
    bands: BandsConfig = field(default_factory=BandsConfig)
    hbm_cache: HBMCacheConfig = MISSING
    dram_cache: DramCacheConfig = MISSING
    preload: PreloadConfig = MISSING
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def __post_init__(self) -> None:
        check_range("policy.predictor_rank", self.predictor_rank, 1, None)
