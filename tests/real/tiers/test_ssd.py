"""real.ssd: O_DIRECT and buffered reads of a tiny random store."""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from m2sim.types import BANDS
from real.manifest import StoreError
from real.ssd import SSDReader
from real.store import convert_store, open_store
from tests.real.tiers.common import (
    DFF,
    FP16,
    INT4,
    INT8,
    PROPS,
    L,
    file_records,
    o_direct_supported,
    tiny_weights,
)


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
