"""The ``policy`` config group: one preset composes a predictor, precision bands, an HBM cache,
a DRAM cache, an SSD preloader and a dense-weight placement (``conf/policy/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from m2sim.errors import ConfigError, check_range
from m2sim.policy.bands import BandsConfig
from m2sim.policy.dram import DramCacheConfig
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.placement import PlacementConfig
from m2sim.policy.preload import PreloadConfig
from m2sim.types import BANDS, Precision


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
    # DECISION (m2cache.md): SSD and DRAM keep every precision the bands use. A subset trades
    # SSD/DRAM bytes for CPU time: a band whose precision is not stored is quantized on the fly
    # from the nearest stored higher precision while neurons are gathered.
    stored_precisions: Optional[list[Precision]] = None

    def __post_init__(self) -> None:
        check_range("policy.predictor_rank", self.predictor_rank, 1, None)
        if self.stored_precisions is not None:
            if not self.stored_precisions:
                raise ConfigError("policy.stored_precisions", "must not be empty")
            highest = min(BANDS.index(p) for p in self.stored_precisions)
            for p in self.bands.used:
                if BANDS.index(p) < highest:
                    raise ConfigError("policy.stored_precisions",
                                      f"band {p.name} needs a stored precision at least as high "
                                      f"(stored: {[q.name for q in self.stored_precisions]})")

    @property
    def stored(self) -> tuple[Precision, ...]:
        """Precisions kept on SSD and in DRAM, highest first."""
        chosen = self.stored_precisions if self.stored_precisions else self.bands.used
        return tuple(p for p in BANDS if p in chosen)

    def source_of(self, band: Precision) -> Precision:
        """The stored precision a band's weights are read from (itself, or the next higher)."""
        candidates = [p for p in self.stored if BANDS.index(p) <= BANDS.index(band)]
        return candidates[-1]
