"""The SSD preloader role: what to read from SSD into DRAM, ahead of need and on demand.

``LayerLookahead`` (M2Cache, paper §5.4) reads whole layers ``depth`` layers ahead of the one
being computed: loading a layer takes ~2x a layer's compute, so depth >= 2. ``NeuronLookahead``
is the alternative the paper rejects: read only the neurons predicted ``depth`` layers ahead,
which are right only ~``recall`` of the time (~80% two layers ahead), so misses hit the SSD on
the critical path. ``OnDemand`` never reads ahead (Accelerate's disk offload, LLM in a flash).
Position arithmetic is cyclic: after the last layer of token t comes layer 0 of token t + 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from m2sim.errors import check_range
from m2sim.policy.dram import DramCache, ids_bytes
from m2sim.policy.records import BandedSet, IdsByBand, LayerRead

SEQUENTIAL_REQUEST_BYTES = 1 << 20  # whole-layer reads are issued as 1 MiB requests


@dataclass
class PreloadConfig:
    """Base of the ``policy/preload`` group."""


@dataclass
class LayerLookaheadConfig(PreloadConfig):
    depth: int = 2  # SSD->DRAM ~2x a layer's compute, so fetch >= 2 ahead (paper §5.4)

    def __post_init__(self) -> None:
        check_range("policy.preload.depth", self.depth, 1, None)


@dataclass
class NeuronLookaheadConfig(PreloadConfig):
    depth: int = 2
    recall: float = 0.8  # predicting two layers ahead is ~80% right (paper §5.4)

    def __post_init__(self) -> None:
        check_range("policy.preload.depth", self.depth, 1, None)
        check_range("policy.preload.recall", self.recall, 0, 1)


@dataclass
class OnDemandConfig(PreloadConfig):
    pass


def preload_depth(cfg: PreloadConfig) -> int:
    return getattr(cfg, "depth", 0)


class Preloader(Protocol):
    def prefetch(self, token: int, layer: int) -> list[LayerRead]:
        """Reads to start when (token, layer) begins; they complete in the background."""
        ...

    def demand(self, token: int, layer: int, want: BandedSet) -> Optional[LayerRead]:
        """The read (token, layer) must wait for, if its data is not in DRAM."""
        ...


def ahead(token: int, layer: int, steps: int, num_layers: int) -> tuple[int, int]:
    pos = token * num_layers + layer + steps
    return divmod(pos, num_layers)


def _whole_layer_read(layer: int, nbytes: int, prefetch: bool,
                      evict_layers: list[int]) -> LayerRead:
    requests = max(1, -(-nbytes // SEQUENTIAL_REQUEST_BYTES))
    return LayerRead(layer=layer, nbytes=nbytes, num_requests=requests, prefetch=prefetch,
                     evict_layers=tuple(evict_layers))


def _neuron_read(layer: int, ids: IdsByBand, id_bytes: tuple[int, int, int],
                 prefetch: bool, evict_layers: list[int]) -> Optional[LayerRead]:
    n = int(sum(len(x) for x in ids))
    if n == 0:
        return None
    return LayerRead(layer=layer, nbytes=ids_bytes(ids, id_bytes), num_requests=n,
                     prefetch=prefetch, ids=ids, evict_layers=tuple(evict_layers))


class LayerLookahead:
    def __init__(self, cfg: LayerLookaheadConfig | OnDemandConfig, dram: DramCache, *,
                 num_layers: int, layer_read_bytes: int, id_bytes: tuple[int, int, int]):
        self.depth = preload_depth(cfg)
        self.dram = dram
        self.num_layers = num_layers
        self.layer_read_bytes = layer_read_bytes
        self.id_bytes = id_bytes

    def prefetch(self, token: int, layer: int) -> list[LayerRead]:
        reads = []
        for step in range(1, self.depth + 1):
            t, target = ahead(token, layer, step, self.num_layers)
            if not self.dram.contains_layer(target):
                evicted = self.dram.admit_layer(target, t)
                reads.append(_whole_layer_read(target, self.layer_read_bytes, True, evicted))
        return reads

    def demand(self, token: int, layer: int, want: BandedSet) -> Optional[LayerRead]:
        miss = self.dram.missing(layer, want.ids)
        read = None
        if miss.whole_layer:
            evicted = self.dram.admit_layer(layer, token)
            read = _whole_layer_read(layer, self.layer_read_bytes, False, evicted)
        elif not miss.empty:
            evicted = self.dram.admit_ids(layer, miss.ids, token)
            read = _neuron_read(layer, miss.ids, self.id_bytes, False, evicted)
        self.dram.touch(layer, want.ids, token)
        return read


class NeuronLookahead:
    def __init__(self, cfg: NeuronLookaheadConfig, dram: DramCache, *, num_layers: int,
                 id_bytes: tuple[int, int, int], fixed_layers: int,
                 banded: Callable[[int, int], BandedSet], num_ids: int, seed: int):
        self.cfg = cfg
        self.dram = dram
        self.num_layers = num_layers
        self.id_bytes = id_bytes
        self.fixed_layers = fixed_layers
        self.banded = banded
        self.num_ids = num_ids
        self.seed = seed

    def _predicted(self, token: int, layer: int) -> IdsByBand:
        """The true banded set with a ``1 - recall`` share swapped for random wrong ids."""
        truth = self.banded(token, layer)
        rng = np.random.default_rng([self.seed, token, layer, 0x9E])
        out = []
        for ids in truth.ids:
            n_wrong = int(round((1.0 - self.cfg.recall) * len(ids)))
            if n_wrong:
                keep = rng.choice(len(ids), size=len(ids) - n_wrong, replace=False)
                wrong = rng.choice(self.num_ids, size=n_wrong, replace=False).astype(np.int32)
                ids = np.union1d(ids[keep], wrong).astype(np.int32)
            out.append(ids)
        return tuple(out)  # type: ignore[return-value]

    def prefetch(self, token: int, layer: int) -> list[LayerRead]:
        t, target = ahead(token, layer, self.cfg.depth, self.num_layers)
        if t < 0 or target < self.fixed_layers:
            return []  # prefill is dense: nothing to predict
        ids = self._predicted(t, target)
        miss = self.dram.missing(target, ids)
        if miss.empty:
            return []
        evicted = self.dram.admit_ids(target, miss.ids, t)
        read = _neuron_read(target, miss.ids, self.id_bytes, True, evicted)
        return [read] if read is not None else []

    def demand(self, token: int, layer: int, want: BandedSet) -> Optional[LayerRead]:
        miss = self.dram.missing(layer, want.ids)
        read = None
        if not miss.empty:
            evicted = self.dram.admit_ids(layer, miss.ids, token)
            read = _neuron_read(layer, miss.ids, self.id_bytes, False, evicted)
        self.dram.touch(layer, want.ids, token)
        return read
