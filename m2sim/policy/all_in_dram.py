"""Every FFN layer held in DRAM (a model that fits host memory, or PowerInfer's cold neurons).
Nothing is ever read from SSD while serving; a model that does not fit is refused."""

from __future__ import annotations

from dataclasses import dataclass

from m2sim.policy.dram import NOTHING_MISSING, DramCacheConfig, Missing
from m2sim.policy.records import IdsByBand


@dataclass
class AllInDramConfig(DramCacheConfig):
    pass


class AllInDram:
    holds_layers = True  # whole layers can be cached

    def __init__(self, *, num_layers: int, layer_bytes: int):
        self.num_layers = num_layers
        self.layer_bytes = layer_bytes

    def initial_layers(self) -> list[int]:
        return list(range(self.num_layers))

    def contains_layer(self, layer: int) -> bool:
        return True

    def missing(self, layer: int, want: IdsByBand) -> Missing:
        return NOTHING_MISSING

    def admit_layer(self, layer: int, token: int) -> list[int]:
        return []

    def admit_ids(self, layer: int, ids: IdsByBand, token: int) -> list[int]:
        return []

    def touch(self, layer: int, want: IdsByBand, token: int) -> None:
        pass

    def resident_bytes(self) -> int:
        return self.num_layers * self.layer_bytes
