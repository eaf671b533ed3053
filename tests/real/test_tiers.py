"""real.ssd / real.dram / real.device_cache / real.prefetch on a tiny random store."""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2sim.types import BANDS, Precision
from real.device_cache import DeviceNeuronCache
from real.dram import DRAMCache
from real.manifest import StoreError
from real.meter import BudgetExceeded
from real.prefetch import Prefetcher
from real.quant import linear, linear_t
from real.ssd import SSDReader
from real.store import Store, convert_store, open_store

L, D, DFF = 2, 64, 128
FP16, INT8, INT4 = BANDS
PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


def tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"model.embed_tokens.weight": torch.randn(50, D, generator=g),
         "model.norm.weight": torch.rand(D, generator=g)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "mlp.gate_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.up_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.down_proj.weight"] = torch.randn(D, DFF, generator=g)
        w[p + "self_attn.q_proj.weight"] = torch.randn(D, D, generator=g)
        w[p + "input_layernorm.weight"] = torch.rand(D, generator=g)
    return w


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return convert_store(tiny_weights(), tmp_path_factory.mktemp("tiers") / "store")


def file_records(store: Store, layer: int, p: Precision) -> torch.Tensor:
    """Ground truth: the layer file read with plain Python I/O, (d_ff, record_bytes)."""
    raw = bytearray(store.ffn_path(layer, p).read_bytes())
    return torch.frombuffer(raw, dtype=torch.uint8).view(DFF, -1)


def o_direct_supported(directory) -> bool:
    probe = directory / ".odirect-probe"
    probe.write_bytes(b"\0" * 4096)
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


# ---- SSD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("direct", [None, False])
@pytest.mark.parametrize("chunk_bytes,span_threads", [(4 << 20, 4), (4096, 3), (4096, 1)])
def test_layer_reads_return_the_file_bytes(store, direct, chunk_bytes, span_threads):
    with SSDReader(store, direct=direct, chunk_bytes=chunk_bytes,
                   span_threads=span_threads) as ssd:
        for layer in range(L):
            for p in BANDS:
                assert torch.equal(ssd.read_layer(layer, p), file_records(store, layer, p))
        s = ssd.stats()
    assert s.bytes_moved == sum(store.layer_bytes(p) for p in BANDS) * L
    assert s.current_bytes == 0 and s.peak_bytes >= store.layer_bytes(FP16)
    pieces = sum(-(-store.layer_bytes(p) // 4096) for p in BANDS) * L  # one read per chunk
    assert s.num_reads == (L * 3 if chunk_bytes > 4096 or span_threads == 1 else pieces)


def test_direct_io_is_used_where_supported(store):
    if not o_direct_supported(store.path):
        pytest.skip("this filesystem has no O_DIRECT")
    with SSDReader(store) as ssd:
        assert ssd.uses_direct_io(store.ffn_path(0, INT8))
        ssd.read_layer(0, INT8)
        assert ssd.stats().io_bytes % 4096 == 0


@PROPS
@given(ids=st.lists(st.integers(0, DFF - 1), max_size=40), p=st.sampled_from(BANDS),
       direct=st.sampled_from([None, False]))
def test_scattered_reads_return_records_in_the_order_asked(store, ids, p, direct):
    with SSDReader(store, direct=direct) as ssd:
        got = ssd.read_records(1, p, np.array(ids, dtype=np.int64))
    assert torch.equal(got, file_records(store, 1, p)[torch.tensor(ids, dtype=torch.long)])


def test_adjacent_records_are_coalesced_into_one_read(store):
    rb = store.record_bytes(FP16)  # 3 * 128 bytes
    far = 4096 * 3 // rb + 1  # far enough for its own aligned block
    with SSDReader(store) as ssd:
        ssd.read_records(0, FP16, np.arange(0, 10))
        one = ssd.stats()
        ssd.read_records(0, FP16, np.array([3, 0, far, 1, 2]))
        two = ssd.stats()
    assert one.num_reads == 1 and one.bytes_moved == 10 * rb
    assert two.num_reads - one.num_reads == 2
    assert two.bytes_moved - one.bytes_moved == 5 * rb


def test_buffered_reads_drop_the_pages_they_read(store, monkeypatch):
    calls = []
    real_fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, off, n, adv: calls.append((off, n, adv)) or real_fadvise(
                            fd, off, n, adv))
    with SSDReader(store, direct=False) as ssd:
        ssd.read_records(0, INT4, np.array([7]))
    rb = store.record_bytes(INT4)
    assert calls == [(7 * rb, rb, os.POSIX_FADV_DONTNEED)]


def test_einval_from_an_o_direct_read_falls_back_to_buffered(store, monkeypatch):
    if not o_direct_supported(store.path):
        pytest.skip("this filesystem has no O_DIRECT")

    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(SSDReader, "_read_direct", refuse)
    with SSDReader(store) as ssd:
        path = store.ffn_path(0, FP16)
        assert ssd.uses_direct_io(path)
        assert torch.equal(ssd.read_layer(0, FP16), file_records(store, 0, FP16))
        assert not ssd.uses_direct_io(path)
    with SSDReader(store, direct=True) as ssd, pytest.raises(StoreError, match="O_DIRECT"):
        ssd.read_layer(0, FP16)


def test_open_without_o_direct_support(store, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", no_direct)
    with SSDReader(store) as ssd:
        assert not ssd.uses_direct_io(store.ffn_path(1, INT8))
        assert torch.equal(ssd.read_layer(1, INT8), file_records(store, 1, INT8))
    with pytest.raises(OSError), SSDReader(store, direct=True):
        pass


def test_background_reads_run_on_io_threads(store):
    main = threading.get_ident()
    with SSDReader(store, num_threads=3) as ssd:
        futs = [ssd.submit_layer(i % L, BANDS[i % 3]) for i in range(9)]
        futs.append(ssd.submit_records(0, INT8, np.array([5, 4])))
        tid = ssd._submit(threading.get_ident).result()
        for i, f in enumerate(futs[:9]):
            assert torch.equal(f.result(), file_records(store, i % L, BANDS[i % 3]))
        assert torch.equal(futs[9].result(), file_records(store, 0, INT8)[[5, 4]])
    assert tid != main


def test_reader_must_be_open_and_closes_its_threads(store):
    ssd = SSDReader(store)
    with pytest.raises(RuntimeError, match="not open"):
        ssd.read_layer(0, FP16)
    with ssd:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        ssd.submit_layer(0, FP16)
    assert not any(t.name.startswith("ssd-") for t in threading.enumerate())


def test_dense_reads_match_safetensors(store):
    with SSDReader(store) as ssd:
        for layer in (0, 1, None):
            got, want = ssd.read_dense(layer), store.load_dense(layer)
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_file_truncated_after_open_is_a_short_read(tmp_path):
    s = convert_store(tiny_weights(), tmp_path / "s")
    with open(s.ffn_path(1, FP16), "r+b") as f:
        f.truncate(5000)
    with SSDReader(s) as ssd, pytest.raises(StoreError, match="short read"):
        ssd.read_layer(1, FP16)
    with pytest.raises(StoreError, match="truncated"):
        open_store(s.path)


# ---- DRAM ---------------------------------------------------------------------------------------
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


# ---- device cache -------------------------------------------------------------------------------
def device_cache(store: Store, slots, capacity=None, device="cpu") -> DeviceNeuronCache:
    m = store.manifest
    return DeviceNeuronCache(d_model=m.d_model, ffn_mats=m.ffn_mats, quant=m.quant, slots=slots,
                             capacity_bytes=capacity, device=device)


def check_consistent(cache: DeviceNeuronCache, store: Store, layer: int, p: Precision) -> None:
    """id -> slot is a bijection onto [0, n) and every slot holds its id's record."""
    cache.synchronize()
    ids = cache.resident_ids(layer, p)
    assert len(set(ids.tolist())) == len(ids) == cache.num_resident(layer, p)
    if len(ids):
        slots = cache.slot_of(layer, p, ids).cpu()
        assert slots.tolist() == list(range(len(ids)))
        pool = cache._pools[(layer, p)][:len(ids)].cpu()
        assert torch.equal(pool, file_records(store, layer, p)[torch.from_numpy(ids)])


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


# ---- prefetch -----------------------------------------------------------------------------------
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
