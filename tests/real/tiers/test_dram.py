"""real.dram: layers and records under a byte budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from m2sim.types import BANDS
from real.dram import DRAMCache
from real.meter import BudgetExceeded
from tests.real.tiers.common import (
    DFF,
    FP16,
    INT4,
    INT8,
    PROPS,
    L,
    file_records,
)


def test_dram_holds_layers_and_records_within_budget(store):
    layer0 = {p: file_records(store, 0, p) for p in BANDS}
    all_bytes = sum(t.nbytes for t in layer0.values())
    dram = DRAMCache(all_bytes + 10 * store.record_bytes(INT8))
    dram.put_layer(0, layer0)
    assert dram.resident_bytes == all_bytes
    assert torch.equal(dram.get_layer(0, INT4), layer0[INT4])
    assert dram.get_layer(1, INT4) is None
    with pytest.raises(BudgetExceeded, match="dram"):
        dram.put_layer(1, {FP16: file_records(store, 1, FP16)})
    assert not dram.has_layer(1, FP16) and dram.resident_bytes == all_bytes
    recs = file_records(store, 1, INT8)[[3, 9]]
    dram.put_records(1, INT8, np.array([3, 9]), recs)
    assert torch.equal(dram.get_records(1, INT8, np.array([9, 3])), recs[[1, 0]])
    assert torch.equal(dram.get_records(0, INT8, np.array([9, 3])), layer0[INT8][[9, 3]])
    assert dram.missing(1, INT8, np.array([3, 4, 9])).tolist() == [4]
    with pytest.raises(KeyError, match="not in DRAM"):
        dram.get_records(1, INT8, np.array([3, 4]))
    s = dram.stats()
    assert (s.num_hits, s.num_misses) == (1 + 2 + 2 + 1, 1 + 1)
    assert dram.evict_layer(0) == all_bytes
    assert dram.evict_records(1, INT8, np.array([3, 50])) == store.record_bytes(INT8)
    assert dram.resident_bytes == store.record_bytes(INT8)
    assert dram.stats().peak_bytes == all_bytes + 2 * store.record_bytes(INT8)


def test_putting_resident_data_again_is_a_no_op(store):
    dram = DRAMCache(None)
    t = file_records(store, 0, INT4)
    dram.put_layer(0, {INT4: t})
    dram.put_layer(0, {INT4: t})
    dram.put_records(0, INT8, np.array([1, 2]), file_records(store, 0, INT8)[[1, 2]])
    dram.put_records(0, INT8, np.array([2, 3]), file_records(store, 0, INT8)[[2, 3]])
    assert dram.resident_bytes == t.nbytes + 3 * store.record_bytes(INT8)
    assert dram.record_ids(0, INT8).tolist() == [1, 2, 3]


dram_ops = st.lists(st.tuples(st.sampled_from(["put_layer", "evict_layer", "put", "evict"]),
                              st.integers(0, L - 1), st.sampled_from(BANDS),
                              st.sets(st.integers(0, DFF - 1), max_size=20)), max_size=25)


@PROPS
@given(ops=dram_ops, budget=st.integers(0, 60_000))
def test_dram_never_exceeds_its_budget(store, ops, budget):
    dram = DRAMCache(budget)
    truth = {(i, p): file_records(store, i, p) for i in range(L) for p in BANDS}
    for op, layer, p, idset in ops:
        ids = np.array(sorted(idset), dtype=np.int64)
        before = dram.resident_bytes
        try:
            if op == "put_layer":
                dram.put_layer(layer, {p: truth[(layer, p)]})
            elif op == "evict_layer":
                dram.evict_layer(layer)
            elif op == "put":
                dram.put_records(layer, p, ids, truth[(layer, p)][torch.from_numpy(ids)])
            else:
                dram.evict_records(layer, p, ids)
        except BudgetExceeded:
            assert dram.resident_bytes == before
        assert dram.resident_bytes <= budget
        held = sum(truth[k].nbytes for k in dram.layers()) + sum(
            len(dram.record_ids(i, q)) * truth[(i, q)].shape[1] for i in range(L) for q in BANDS)
        assert dram.resident_bytes == held
    for i in range(L):
        for q in BANDS:
            ids = dram.record_ids(i, q)
            if len(ids):
                assert torch.equal(dram.get_records(i, q, ids), truth[(i, q)][torch.from_numpy(ids)])
