"""Prefetch: background SSD->DRAM reads with futures, and DRAM->device loads (paper §5.4, §5.5).

``Prefetcher`` executes the plan's reads and copies; it decides nothing. ``prefetch_layer`` reads
every requested precision of a layer on the SSD reader's I/O threads and, once all have
arrived, puts them into DRAM together (on the I/O thread that finished last).
``prefetch_records`` does the same for scattered neuron records. ``to_device`` gathers records
from DRAM and loads them into the device cache, which copies on its CUDA copy stream when there
is one (asynchronous) and synchronously on CPU. A context manager: ``close`` waits for pending
reads so that no thread writes into DRAM after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from typing import Optional

import numpy as np
from torch import Tensor

from m2sim.types import Precision
from real.device_cache import DeviceNeuronCache
from real.dram import DRAMCache
from real.ssd import SSDReader


class Prefetcher:
    """Background reads into DRAM and loads into the device cache."""

    def __init__(self, ssd: SSDReader, dram: DRAMCache,
                 device: Optional[DeviceNeuronCache] = None):
        self.ssd, self.dram, self.device = ssd, dram, device
        self._pending: dict[tuple, Future[None]] = {}
        self._lock = threading.Lock()
        self._open = False

    def open(self) -> Prefetcher:
        self._open = True
        return self

    def close(self) -> None:
        """Wait for every pending read (errors stay in their futures)."""
        self._open = False
        self.wait_all(raise_errors=False)

    def __enter__(self) -> Prefetcher:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- SSD -> DRAM ------------------------------------------------------------------------
    def prefetch_layer(self, layer: int, precisions: Sequence[Precision]) -> Future[None]:
        """Read a whole layer at ``precisions`` into DRAM in the background."""
        reads = {p: self.ssd.submit_layer(layer, p) for p in precisions}
        return self._when_all(("layer", layer), reads,
                              lambda got: self.dram.put_layer(layer, got))

    def prefetch_records(self, layer: int, precision: Precision,
                         ids: np.ndarray) -> Future[None]:
        """Read neuron records of one (layer, precision) into DRAM in the background."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        reads = {precision: self.ssd.submit_records(layer, precision, ids)}
        return self._when_all(("records", layer, precision), reads,
                              lambda got: self.dram.put_records(layer, precision, ids,
                                                                got[precision]))

    def pending_layers(self) -> list[int]:
        with self._lock:
            return sorted({k[1] for k in self._pending})

    def wait_layer(self, layer: int) -> None:
        """Block until every pending read of ``layer`` is in DRAM; re-raise its error."""
        with self._lock:
            futs = [f for k, f in self._pending.items() if k[1] == layer]
        for f in futs:
            f.result()

    def wait_all(self, raise_errors: bool = True) -> None:
        with self._lock:
            futs = list(self._pending.values())
        wait(futs)
        if raise_errors:
            for f in futs:
                f.result()

    def drop_layer(self, layer: int) -> Future[None]:
        """Evict ``layer`` from DRAM once its pending reads are in; its buffers are unmapped on
        an I/O thread, not on the caller's (the future says when)."""
        self.wait_layer(layer)
        return self.ssd.release(self.dram.pop_layer(layer))

    # ---- DRAM -> device ---------------------------------------------------------------------
    def to_device(self, layer: int, precision: Precision, ids: np.ndarray) -> None:
        """Load ``ids`` from DRAM into the device cache (async on CUDA, sync on CPU)."""
        if self.device is None:
            raise RuntimeError("Prefetcher has no device cache")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids):
            table, rows = self.dram.lookup_records(layer, precision, ids)
            self.device.load(layer, precision, ids, table, rows=rows)

    # ---- internals --------------------------------------------------------------------------
    def _when_all(self, key: tuple, reads: dict[Precision, Future[Tensor]],
                  then: Callable[[dict[Precision, Tensor]], None]) -> Future[None]:
        """A future completed after all ``reads`` and ``then(results)``."""
        if not self._open:
            for f in reads.values():
                f.cancel()
            raise RuntimeError("Prefetcher is not open (use `with Prefetcher(...) as pf:`)")
        out: Future[None] = Future()
        out.set_running_or_notify_cancel()
        left = [len(reads)]
        key = (*key, id(out))
        with self._lock:
            self._pending[key] = out

        def one_done(_: Future) -> None:
            with self._lock:
                left[0] -= 1
                last = left[0] == 0
            if not last:
                return
            try:
                then({p: f.result() for p, f in reads.items()})
                err = None
            except BaseException as e:  # handed to the caller through the future
                err = e
            # the read futures hold the buffers and sit in a cycle with this callback: drop
            # them now, or the buffers live until the cyclic GC runs, long after DRAM let go
            reads.clear()
            with self._lock:
                self._pending.pop(key, None)
            if err is None:
                out.set_result(None)
            else:
                out.set_exception(err)

        for f in list(reads.values()):  # a read already done calls back at once
            f.add_done_callback(one_done)
        return out
