"""real.device_cache: slot pools, loads, evictions and gathers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from m2sim.types import BANDS
from real.meter import BudgetExceeded
from real.quant import linear, linear_t
from tests.real.tiers.common import (
    CUDA,
    FP16,
    INT4,
    INT8,
    PROPS,
    D,
    L,
    check_consistent,
    device_cache,
    file_records,
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device_cache_active_neurons_compute_the_sparse_ffn(store, device):
    with device_cache(store, [(4, 8, 16), (0, 0, 8)], device=device) as cache:
        ids = {FP16: np.array([5, 1]), INT8: np.array([7, 0, 100]), INT4: np.array([3])}
        for p, x in ids.items():
            cache.load(0, p, x, file_records(store, 0, p)[torch.from_numpy(x)])
        active = cache.active(0)
        x = torch.randn(2, D, generator=torch.Generator().manual_seed(0)).to(device)
        got = sum(linear_t(torch.nn.functional.silu(linear(x, b.gate)) * linear(x, b.up), b.down)
                  for b in active.values())
        want = 0
        for p, i in ids.items():
            g, u, dn = store.decode(file_records(store, 0, p)[torch.from_numpy(i)],
                                    p).dequantize()
            want = want + (torch.nn.functional.silu(x.cpu() @ g.T) * (x.cpu() @ u.T)) @ dn.T
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
        assert cache.stats().bytes_moved == sum(len(i) * store.record_bytes(p)
                                                for p, i in ids.items())
        assert set(cache.active(1)) == {INT4}


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device_cache_gathers_rows_from_a_layer_table(store, device):
    table = file_records(store, 0, INT4)
    with device_cache(store, [(0, 0, 5)], device=device) as cache:
        cache.load(0, INT4, np.array([9, 2, 40]), table, rows=np.array([9, 2, 40]))
        with pytest.raises(ValueError, match="rows"):
            cache.load(0, INT4, np.array([1, 3]), table, rows=np.array([1]))
        with pytest.raises(ValueError, match="uint8 records"):
            cache.load(0, INT4, np.array([1, 3]), table)
        check_consistent(cache, store, 0, INT4)
        assert cache.resident_ids(0, INT4).tolist() == [9, 2, 40]


def test_device_cache_pools_must_fit_the_budget(store):
    slots = [(4, 4, 4)] * L
    need = L * 4 * sum(store.record_bytes(p) for p in BANDS)
    with device_cache(store, slots, capacity=need) as cache:
        assert cache.allocated_bytes == need
    with pytest.raises(BudgetExceeded, match="slot pools"):
        device_cache(store, slots, capacity=need - 1).open()


def test_device_cache_rejects_loads_beyond_free_slots_and_double_loads(store):
    with device_cache(store, [(0, 3, 0)]) as cache:
        recs = file_records(store, 0, INT8)
        cache.load(0, INT8, np.array([1, 2]), recs[[1, 2]])
        with pytest.raises(BudgetExceeded, match="1 free"):
            cache.load(0, INT8, np.array([3, 4]), recs[[3, 4]])
        with pytest.raises(ValueError, match="already resident"):
            cache.load(0, INT8, np.array([2]), recs[[2]])
        with pytest.raises(BudgetExceeded, match="no FP16 slots"):
            cache.load(0, FP16, np.array([2]), file_records(store, 0, FP16)[[2]])
        with pytest.raises(KeyError):
            cache.evict(0, INT8, np.array([1, 9]))
        assert cache.resident_ids(0, INT8).tolist() == [1, 2]
        assert cache.lookup(0, INT8, np.array([1, 9, 2])).tolist() == [True, False, True]
        assert (cache.stats().num_hits, cache.stats().num_misses) == (2, 1)


cache_ops = st.lists(st.tuples(st.booleans(), st.sampled_from(BANDS),
                               st.sets(st.integers(0, 30), max_size=8)), max_size=30)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@PROPS
@given(ops=cache_ops, slots=st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)))
def test_device_cache_load_evict_keep_the_slot_map_consistent(store, device, ops, slots):
    layer = 1
    with device_cache(store, [(0, 0, 0), slots], device=device) as cache:
        budget = cache.allocated_bytes
        for is_load, p, idset in ops:
            resident = set(cache.resident_ids(layer, p).tolist())
            before = cache.stats().current_bytes
            if is_load:
                ids = np.array(sorted(idset - resident), dtype=np.int64)
                recs = file_records(store, layer, p)[torch.from_numpy(ids)]
                try:
                    cache.load(layer, p, ids, recs)
                except BudgetExceeded:
                    assert cache.stats().current_bytes == before
                    assert set(cache.resident_ids(layer, p).tolist()) == resident
            else:
                cache.evict(layer, p, np.array(sorted(idset & resident), dtype=np.int64))
            s = cache.stats()
            assert s.current_bytes <= budget
            assert s.current_bytes == sum(cache.num_resident(layer, q) * store.record_bytes(q)
                                          for q in BANDS)
            check_consistent(cache, store, layer, p)
