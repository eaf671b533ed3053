"""The device (HBM) neuron cache: per layer, one slot pool per precision (paper §5.3).

A pool is a preallocated (slots, record_bytes) uint8 tensor on the compute device, holding
records byte-for-byte as the store lays them out. Pools stay *compact*: the resident neurons of
(layer, precision) occupy slots [0, n), so ``active`` hands the FFN zero-copy ``Bundles`` views
of ``pool[:n]`` with no gather. ``load`` appends at slot n; ``evict`` moves the last resident
records into the freed slots. ``slot_of`` maps ids to slots for FFNs that use a subset.
On CUDA, loads go through a pinned staging buffer on a separate copy stream, and ``active``
makes the current stream wait for the layer's copies; on CPU everything is synchronous.
Allocation happens in ``open()``; the pools must fit ``capacity_bytes`` (``BudgetExceeded``).
The id -> slot map is a numpy array per pool (-1: not resident), so bookkeeping is vectorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from m2sim.specs import QuantConfig
from m2sim.types import BANDS, Precision
from real.bundle import Bundles, decode, record_bytes
from real.meter import BudgetExceeded, TierMeter, TierStats

Key = tuple[int, Precision]


class DeviceNeuronCache:
    """Slot pools for every (layer, precision) with ``slots > 0``; a context manager.

    Args:
        d_model, ffn_mats, quant: the record layout (``StoreManifest`` has them).
        slots: per layer, slot counts per precision in ``BANDS`` order (FP16, INT8, INT4).
        capacity_bytes: the device budget for all pools; None for no limit.
        device: a torch device, "cpu" or "cuda[:i]".
    """

    def __init__(self, *, d_model: int, ffn_mats: int, quant: QuantConfig,
                 slots: Sequence[tuple[int, int, int]], capacity_bytes: Optional[int],
                 device: str | torch.device = "cpu"):
        self.d_model, self.ffn_mats, self.quant = d_model, ffn_mats, quant
        self.slots = {(layer, p): int(n) for layer, row in enumerate(slots)
                      for p, n in zip(BANDS, row) if n > 0}
        self.record_bytes = {p: record_bytes(d_model, ffn_mats, p, quant) for p in BANDS}
        self.device = torch.device(device)
        self.meter = TierMeter("device", capacity_bytes)
        self._pools: dict[Key, Tensor] = {}
        self._ids: dict[Key, np.ndarray] = {}  # slot -> id, first n valid
        self._map: dict[Key, np.ndarray] = {}  # id -> slot, -1 if not resident
        self._n: dict[Key, int] = {}  # resident count
        self._cuda: Optional[_CudaCopier] = None

    @property
    def allocated_bytes(self) -> int:
        return sum(n * self.record_bytes[k[1]] for k, n in self.slots.items())

    def stats(self) -> TierStats:
        return self.meter.stats()

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self) -> DeviceNeuronCache:
        cap = self.meter.capacity_bytes
        if cap is not None and self.allocated_bytes > cap:
            raise BudgetExceeded(f"device: slot pools need {self.allocated_bytes} bytes, "
                                 f"budget is {cap}")
        for k, n in self.slots.items():
            self._pools[k] = torch.empty((n, self.record_bytes[k[1]]), dtype=torch.uint8,
                                         device=self.device)
            self._ids[k] = np.full(n, -1, dtype=np.int64)
            self._map[k] = np.full(0, -1, dtype=np.int64)
            self._n[k] = 0
        if self.device.type == "cuda":
            biggest = max((t.nbytes for t in self._pools.values()), default=0)
            self._cuda = _CudaCopier(self.device, biggest)
        return self

    def close(self) -> None:
        if self._cuda is not None:
            self._cuda.close()
            self._cuda = None
        self.meter.release(self.meter.current_bytes)
        self._pools.clear()
        self._ids.clear()
        self._map.clear()
        self._n.clear()

    def __enter__(self) -> DeviceNeuronCache:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- queries ----------------------------------------------------------------------------
    def num_resident(self, layer: int, precision: Precision) -> int:
        return self._n.get((layer, precision), 0)

    def resident_ids(self, layer: int, precision: Precision) -> np.ndarray:
        """Ids in slot order (slot s holds ``resident_ids(...)[s]``)."""
        k = (layer, precision)
        return self._ids[k][:self._n[k]].copy() if k in self._ids else np.empty(0, int)

    def _slots(self, k: Key, ids: np.ndarray) -> np.ndarray:
        """Slot of each id, -1 where not resident (ids must be >= 0)."""
        m = self._map.get(k)
        if m is None or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int64)
        inside = ids < len(m)
        out[inside] = m[ids[inside]]
        return out

    def lookup(self, layer: int, precision: Precision, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of ``ids`` resident now; counts hits and misses."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        mask = self._slots((layer, precision), ids) >= 0
        self.meter.looked_up(int(mask.sum()), int((~mask).sum()))
        return mask

    def slot_of(self, layer: int, precision: Precision, ids: np.ndarray) -> Tensor:
        """Slot indices (on the device) of resident ``ids``; KeyError if one is not resident."""
        k = (layer, precision)
        if k not in self._map:
            raise KeyError(k)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        slots = self._slots(k, ids)
        if (slots < 0).any():
            raise KeyError(f"layer {layer} {precision.name}: ids {ids[slots < 0][:5].tolist()} "
                           f"not resident")
        return torch.from_numpy(slots).to(self.device)

    def synchronize(self) -> None:
        """Block the host until every issued copy has finished (no-op on CPU)."""
        if self._cuda is not None:
            self._cuda.stream.synchronize()

    def active(self, layer: int) -> dict[Precision, Bundles]:
        """Per precision, the resident neurons of ``layer`` as ``Bundles`` (views of pools)."""
        if self._cuda is not None:
            self._cuda.wait_for(layer)
        out = {}
        for p in BANDS:
            k = (layer, p)
            if k in self._pools:
                out[p] = decode(self._pools[k][:self._n[k]], self.d_model,
                                self.ffn_mats, p, self.quant)
        return out

    def gather(self, layer: int, precision: Precision, ids: np.ndarray) -> Bundles:
        """The resident neurons ``ids`` (in that order) copied out as one block of ``Bundles``
        (for FFNs that use a subset of a pool: LRU, static hot sets); KeyError if one is not."""
        if self._cuda is not None:
            self._cuda.wait_for(layer)
        records = self._pools[(layer, precision)].index_select(
            0, self.slot_of(layer, precision, ids))
        return decode(records, self.d_model, self.ffn_mats, precision, self.quant)

    # ---- load / evict -----------------------------------------------------------------------
    def load(self, layer: int, precision: Precision, ids: np.ndarray, records: Tensor, *,
             rows: Optional[np.ndarray] = None) -> None:
        """Copy the records of non-resident ``ids`` into free slots.

        ``records`` is (len(ids), record_bytes) uint8, or with ``rows`` a table (m, record_bytes)
        whose rows ``rows[j]`` belong to ``ids[j]`` (a DRAM layer: the gather then writes
        straight into the staging buffer, one host copy instead of two)."""
        k = (layer, precision)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        if k not in self._pools:
            raise BudgetExceeded(f"device: layer {layer} has no {precision.name} slots")
        rb = self.record_bytes[precision]
        want = len(ids) if rows is None else records.shape[0]
        if (records.dim() != 2 or tuple(records.shape) != (want, rb)
                or records.dtype != torch.uint8 or (rows is not None and len(rows) != len(ids))):
            raise ValueError(f"expected ({len(ids)}, {rb}) uint8 records (or a table and "
                             f"{len(ids)} rows), got {tuple(records.shape)} {records.dtype}")
        idx = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if ids.min() < 0 or len(np.unique(ids)) != len(ids) or (self._slots(k, ids) >= 0).any():
            raise ValueError(f"layer {layer} {precision.name}: ids repeated or already resident")
        n = self._n[k]
        free = self.slots[k] - n
        if len(ids) > free:
            raise BudgetExceeded(f"device: layer {layer} {precision.name} pool has {free} free "
                                 f"slots, load needs {len(ids)} (evict first)")
        self.meter.reserve(len(ids) * rb, f"load of layer {layer} {precision.name}")
        dst = self._pools[k][n:n + len(ids)]
        if self._cuda is not None:
            self._cuda.copy(layer, dst, records, idx)
        elif idx is None:
            dst.copy_(records)
        else:
            torch.index_select(records, 0, idx, out=dst)
        self._ids[k][n:n + len(ids)] = ids
        m = self._map[k]
        if ids.max() >= len(m):
            m = self._map[k] = np.concatenate((m, np.full(int(ids.max()) + 1 - len(m), -1,
                                                          dtype=np.int64)))
        m[ids] = np.arange(n, n + len(ids))
        self._n[k] = n + len(ids)
        self.meter.moved(len(ids) * rb)

    def evict(self, layer: int, precision: Precision, ids: np.ndarray) -> None:
        """Free the slots of resident ``ids``, keeping the pool compact; KeyError if one is not."""
        k = (layer, precision)
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if not len(ids):
            return
        if k not in self._map:
            raise KeyError(k)
        slot_ids, m = self._ids[k], self._map[k]
        gone = self._slots(k, ids)
        if (gone < 0).any():
            raise KeyError(f"layer {layer} {precision.name}: ids {ids[gone < 0][:5].tolist()} "
                           f"not resident")
        n = self._n[k]
        keep = n - len(ids)
        holes = gone[gone < keep]  # freed slots inside the new [0, keep)
        movers = np.setdiff1d(np.arange(keep, n), gone, assume_unique=True)  # same count
        m[ids] = -1
        if len(holes):
            pool = self._pools[k]
            if self._cuda is not None:
                src, dst = (torch.from_numpy(x).to(self.device) for x in (movers, holes))
                self._cuda.move(layer, pool, src, dst)
            else:  # numpy moves whole rows (torch's index_copy_ on uint8 rows is ~20x slower)
                rows = pool.numpy()
                rows[holes] = rows[movers]
            slot_ids[holes] = slot_ids[movers]
            m[slot_ids[holes]] = holes
        slot_ids[keep:n] = -1
        self._n[k] = keep
        self.meter.release(len(ids) * self.record_bytes[precision])


class _CudaCopier:
    """A copy stream, a pinned staging buffer and per-layer "copies done" events."""

    def __init__(self, device: torch.device, staging_bytes: int):
        self.stream = torch.cuda.Stream(device)
        self.staging = torch.empty(max(staging_bytes, 1), dtype=torch.uint8, pin_memory=True)
        self.staging_free = torch.cuda.Event()
        self.done: dict[int, torch.cuda.Event] = {}

    def copy(self, layer: int, dst: Tensor, records: Tensor, rows: Optional[Tensor]) -> None:
        """records[rows] (or records) -> dst, on the copy stream."""
        on_device = records.device == dst.device
        if on_device:
            src = records
            src.record_stream(self.stream)  # keep its memory until the copy ran
        else:  # host -> pinned staging (one CPU copy, gathering rows) -> device (async DMA)
            self.staging_free.synchronize()  # the previous DMA out of staging is done
            src = self.staging[:dst.numel()].view(dst.shape)
            if rows is None:
                src.copy_(records)
            else:
                torch.index_select(records, 0, rows, out=src)
        self.stream.wait_stream(torch.cuda.current_stream(dst.device))  # FFN reads done
        with torch.cuda.stream(self.stream):
            if on_device and rows is not None:
                torch.index_select(src, 0, rows.to(dst.device), out=dst)
            else:
                dst.copy_(src, non_blocking=True)
        self.staging_free.record(self.stream)
        self._mark(layer)

    def move(self, layer: int, pool: Tensor, src: Tensor, dst: Tensor) -> None:
        self.stream.wait_stream(torch.cuda.current_stream(pool.device))
        src.record_stream(self.stream)
        dst.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            pool.index_copy_(0, dst, pool.index_select(0, src))
        self._mark(layer)

    def _mark(self, layer: int) -> None:
        ev = self.done.setdefault(layer, torch.cuda.Event())
        ev.record(self.stream)

    def wait_for(self, layer: int) -> None:
        if layer in self.done:
            torch.cuda.current_stream().wait_event(self.done[layer])

    def close(self) -> None:
        self.stream.synchronize()
