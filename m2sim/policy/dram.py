"""The DRAM role: which FFN weights are in host memory, at layer or neuron granularity.

A layer in DRAM holds every neuron at each stored precision (``stored``; DECISION, m2cache.md:
all precisions the bands use). Policies of the ``policy/dram_cache`` group implement
``DramCache``; ``missing`` tells the planner what a (token, layer) must read from SSD now.
Capacities are in layers (or bytes for neuron-level policies) and come from the DRAM budget
left after pinned dense weights; ``None`` means "as many as fit".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from m2sim.policy.records import IdsByBand


@dataclass
class DramCacheConfig:
    """Base of the ``policy/dram_cache`` group."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Missing:
    """What a layer lacks in DRAM: the whole layer, or some neuron ids per band."""

    whole_layer: bool
    ids: Optional[IdsByBand] = None

    @property
    def empty(self) -> bool:
        return not self.whole_layer and (self.ids is None or all(len(x) == 0 for x in self.ids))


NOTHING_MISSING = Missing(whole_layer=False)


class DramCache(Protocol):
    holds_layers: bool  # False: neuron-level only; prefill then streams layers uncached
    def initial_layers(self) -> list[int]:
        """Layers loaded before serving starts (warm-up, not timed)."""
        ...

    def contains_layer(self, layer: int) -> bool: ...

    def missing(self, layer: int, want: IdsByBand) -> Missing: ...

    def admit_layer(self, layer: int, token: int) -> list[int]:
        """Make room for and record a whole layer; returns the layers evicted."""
        ...

    def admit_ids(self, layer: int, ids: IdsByBand, token: int) -> list[int]:
        """Record neuron ids of a layer; returns the layers evicted to make room."""
        ...

    def touch(self, layer: int, want: IdsByBand, token: int) -> None:
        """Record that ``layer`` was used by ``token`` with active ids ``want``."""
        ...

    def resident_bytes(self) -> int: ...


def id_count(ids: IdsByBand) -> int:
    return int(sum(len(x) for x in ids))


def ids_bytes(ids: IdsByBand, id_bytes: tuple[int, int, int]) -> int:
    return int(sum(len(x) * b for x, b in zip(ids, id_bytes)))


def union_ids(a: IdsByBand, b: IdsByBand) -> IdsByBand:
    return tuple(np.union1d(x, y).astype(np.int32) for x, y in zip(a, b))  # type: ignore[return-value]
