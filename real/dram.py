"""The DRAM tier: host memory holding whole FFN layers or single neuron records, under a budget.

Entries are (layer, precision) blocks of records as read from the store: a whole layer is a
(d_ff, record_bytes) uint8 tensor, a neuron record a (record_bytes,) row. The cache only
executes: ``put_*`` and ``evict_*`` come from the policy's decisions, and a put that would take
it over ``capacity_bytes`` raises ``BudgetExceeded`` and changes nothing. Putting something
already resident is a no-op for that part (a prefetch racing a demand read). Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from m2sim.types import Precision
from real.meter import TierMeter, TierStats

Key = tuple[int, Precision]


class DRAMCache:
    """Whole layers and neuron records in host memory with a hard byte budget."""

    def __init__(self, capacity_bytes: Optional[int]):
        self.meter = TierMeter("dram", capacity_bytes)
        self._layers: dict[Key, Tensor] = {}  # (layer, p) -> (d_ff, record_bytes) uint8
        self._records: dict[Key, dict[int, Tensor]] = {}  # (layer, p) -> id -> (record_bytes,)
        self._lock = threading.Lock()

    @property
    def capacity_bytes(self) -> Optional[int]:
        return self.meter.capacity_bytes

    @property
    def resident_bytes(self) -> int:
        return self.meter.current_bytes

    def stats(self) -> TierStats:
        return self.meter.stats()

    # ---- whole layers -----------------------------------------------------------------------
    def put_layer(self, layer: int, records: Mapping[Precision, Tensor]) -> None:
        """Insert a layer's records at one or more precisions, all or nothing."""
        with self._lock:
            new = {p: t for p, t in records.items() if (layer, p) not in self._layers}
            nbytes = sum(t.nbytes for t in new.values())
            self.meter.reserve(nbytes, f"layer {layer} ({', '.join(p.name for p in new)})")
            self._layers.update({(layer, p): t for p, t in new.items()})
        self.meter.moved(nbytes, num_reads=1 if new else 0)

    def has_layer(self, layer: int, precision: Precision) -> bool:
        return (layer, precision) in self._layers

    def get_layer(self, layer: int, precision: Precision) -> Optional[Tensor]:
        """The layer's records at ``precision``, or None; counts a hit or a miss."""
        t = self._layers.get((layer, precision))
        self.meter.looked_up(int(t is not None), int(t is None))
        return t

    def evict_layer(self, layer: int, precisions: Optional[Iterable[Precision]] = None) -> int:
        """Drop a layer (all its precisions by default); returns the bytes freed."""
        return sum(t.nbytes for t in self.pop_layer(layer, precisions))

    def pop_layer(self, layer: int, precisions: Optional[Iterable[Precision]] = None
                  ) -> list[Tensor]:
        """Remove a layer (all its precisions by default) and hand its blocks to the caller,
        who decides where their memory is let go (``Prefetcher.drop_layer``: off the thread
        that computes). Their bytes leave the budget now."""
        with self._lock:
            keys = [k for k in self._layers if k[0] == layer
                    and (precisions is None or k[1] in set(precisions))]
            blocks = [self._layers.pop(k) for k in keys]
            self.meter.release(sum(t.nbytes for t in blocks))
        return blocks

    def layers(self) -> list[Key]:
        with self._lock:
            return sorted(self._layers, key=lambda k: (k[0], k[1].name))

    # ---- neuron records ---------------------------------------------------------------------
    def put_records(self, layer: int, precision: Precision, ids: np.ndarray,
                    records: Tensor) -> None:
        """Insert records (len(ids), record_bytes) of a layer; ids already held are skipped."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if records.dim() != 2 or records.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but records of shape {tuple(records.shape)}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        with self._lock:
            held = self._records.setdefault((layer, precision), {})
            new = [k for k, i in enumerate(ids.tolist()) if i not in held]
            nbytes = len(new) * records.shape[1]
            self.meter.reserve(nbytes, f"{len(new)} records of layer {layer} {precision.name}")
            for k in new:  # own copies: a view would pin the whole batch after evictions
                held[int(ids[k])] = records[k].clone()
        self.meter.moved(nbytes, num_reads=1 if new else 0)

    def missing(self, layer: int, precision: Precision, ids: np.ndarray) -> np.ndarray:
        """The ids of ``ids`` not in DRAM (neither as a layer nor as records)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if (layer, precision) in self._layers:
            return ids[:0]
        held = self._records.get((layer, precision), {})
        return ids[[i not in held for i in ids.tolist()]]

    def get_records(self, layer: int, precision: Precision, ids: np.ndarray) -> Tensor:
        """Records of ``ids`` (len(ids), record_bytes), gathered from a layer or from records.

        Raises KeyError if any id is missing; hits and misses are counted per id."""
        table, rows = self.lookup_records(layer, precision, ids)
        return table if rows is None else table.index_select(0, torch.from_numpy(rows))

    def lookup_records(self, layer: int, precision: Precision,
                       ids: np.ndarray) -> tuple[Tensor, Optional[np.ndarray]]:
        """Where the records of ``ids`` are: (whole layer, ids as rows) if the layer is held,
        else (stacked records, None). Counts like ``get_records``; KeyError if one is missing.
        Lets a caller gather straight into its own buffer (``DeviceNeuronCache.load``)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            whole = self._layers.get((layer, precision))
            if whole is not None:
                self.meter.looked_up(len(ids), 0)
                return whole, ids
            held = self._records.get((layer, precision), {})
            lost = [i for i in ids.tolist() if i not in held]
            self.meter.looked_up(len(ids) - len(lost), len(lost))
            if lost:
                raise KeyError(f"layer {layer} {precision.name}: {len(lost)} of {len(ids)} ids "
                               f"not in DRAM (first {lost[:5]})")
            if not len(ids):
                return torch.empty((0, 0), dtype=torch.uint8), None
            return torch.stack([held[i] for i in ids.tolist()]), None

    def evict_records(self, layer: int, precision: Precision, ids: np.ndarray) -> int:
        """Drop neuron records (ids not held are ignored); returns the bytes freed."""
        with self._lock:
            held = self._records.get((layer, precision), {})
            freed = sum(held.pop(i).nbytes for i in np.asarray(ids).reshape(-1).tolist()
                        if i in held)
            self.meter.release(freed)
        return freed

    def record_ids(self, layer: int, precision: Precision) -> np.ndarray:
        with self._lock:
            return np.array(sorted(self._records.get((layer, precision), {})), dtype=np.int64)
