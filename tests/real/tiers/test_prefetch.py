"""real.prefetch: background reads into DRAM, loads into the device, dropping layers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from m2sim.types import BANDS
from real.dram import DRAMCache
from real.meter import BudgetExceeded
from real.prefetch import Prefetcher
from real.ssd import SSDReader
from tests.real.tiers.common import (
    CUDA,
    INT4,
    INT8,
    L,
    check_consistent,
    device_cache,
    file_records,
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_prefetch_fills_dram_in_the_background_then_loads_the_device(store, device):
    dram = DRAMCache(None)
    with SSDReader(store) as ssd, device_cache(store, [(2, 2, 2)] * L, device=device) as dev, \
            Prefetcher(ssd, dram, dev) as pf:
        f1 = pf.prefetch_layer(1, BANDS)
        f0 = pf.prefetch_records(0, INT4, np.array([9, 2]))
        f1.result()
        f0.result()
        assert pf.pending_layers() == []
        for p in BANDS:
            assert torch.equal(dram.get_layer(1, p), file_records(store, 1, p))
        assert dram.record_ids(0, INT4).tolist() == [2, 9]
        pf.to_device(1, INT8, np.array([4, 6]))
        pf.to_device(0, INT4, np.array([9]))
        check_consistent(dev, store, 1, INT8)
        check_consistent(dev, store, 0, INT4)
        assert dram.stats().bytes_moved == sum(store.layer_bytes(p) for p in BANDS) + \
            2 * store.record_bytes(INT4)


def test_dropping_a_layer_frees_its_buffers_on_an_io_thread(store):
    """DRAM evictions of read layers unmap their buffers off the computing thread."""
    import weakref

    dram = DRAMCache(None)
    freed_on: list[str] = []
    with SSDReader(store) as ssd, Prefetcher(ssd, dram) as pf:
        pf.prefetch_layer(1, BANDS).result()
        for p in BANDS:
            weakref.finalize(dram.get_layer(1, p),
                             lambda: freed_on.append(threading.current_thread().name))
        before = dram.resident_bytes
        fut = pf.drop_layer(1)
        assert dram.resident_bytes == before - sum(store.layer_bytes(p) for p in BANDS) == 0
        assert not any(dram.has_layer(1, p) for p in BANDS)
        fut.result()
    assert len(freed_on) == len(BANDS)
    assert all(name.startswith("ssd-io") for name in freed_on), freed_on


def test_prefetch_errors_arrive_through_the_future(store):
    dram = DRAMCache(store.layer_bytes(INT4) - 1)
    with SSDReader(store) as ssd, Prefetcher(ssd, dram) as pf:
        fut = pf.prefetch_layer(0, [INT4])
        with pytest.raises(BudgetExceeded):
            fut.result()
        with pytest.raises(BudgetExceeded):
            pf.prefetch_layer(1, [INT4]) and pf.wait_layer(1)
    assert dram.resident_bytes == 0
    with SSDReader(store) as ssd, pytest.raises(RuntimeError, match="not open"):
        Prefetcher(ssd, dram).prefetch_layer(0, [INT4])


def test_closing_the_prefetcher_waits_for_pending_reads(store):
    dram = DRAMCache(None)
    with SSDReader(store, num_threads=2) as ssd:
        with Prefetcher(ssd, dram) as pf:
            for layer in range(L):
                pf.prefetch_layer(layer, BANDS)
        assert sorted(dram.layers(), key=str) == sorted(
            ((i, p) for i in range(L) for p in BANDS), key=str)
