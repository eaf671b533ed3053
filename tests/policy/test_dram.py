"""DRAM layer caches and the SSD preloaders."""

import numpy as np

from m2sim.policy.layer_lru import LayerLRU
from m2sim.policy.layer_window import LayerWindow
from m2sim.policy.preload import LayerLookahead, LayerLookaheadConfig, OnDemandConfig, ahead
from m2sim.policy.records import BandedSet

E = np.empty(0, np.int32)
WANT = BandedSet(ids=(np.arange(4, dtype=np.int32), E, E))


def _window(L=8, fixed=3, window=3):
    return LayerWindow(num_layers=L, fixed_layers=fixed, window_layers=window, layer_bytes=100,
                       id_bytes=(1, 1, 1), num_ids=4)


def test_ahead_wraps_to_the_next_token():
    assert ahead(0, 6, 1, 8) == (0, 7)
    assert ahead(0, 7, 1, 8) == (1, 0)
    assert ahead(-1, 7, 2, 8) == (0, 1)


def test_lookahead_never_fetches_a_fixed_area_layer():
    dram = _window()
    pre = LayerLookahead(LayerLookaheadConfig(depth=2), dram, num_layers=8, layer_read_bytes=100,
                         id_bytes=(1, 1, 1))
    fetched = []
    for t in range(3):
        for layer in range(8):  # the planner's order: this layer's demand, then reads ahead
            assert pre.demand(t, layer, WANT) is None or t == 0
            fetched += [(t, r.layer) for r in pre.prefetch(t, layer)]
    assert all(layer >= 3 for _, layer in fetched)
    # each non-fixed layer is read at most once per token; the 3-layer window keeps one of the
    # five across the token boundary (the one needed soonest after layer 0)
    token1 = sorted(layer for t, layer in fetched if t == 1)
    assert len(token1) == len(set(token1)) == 4


def test_layer_window_drops_the_layer_just_computed_and_keeps_the_fixed_area():
    dram = _window(window=2)
    assert dram.initial_layers() == [0, 1, 2]
    assert dram.admit_layer(3, 0) == []
    dram.touch(3, WANT.ids, 0)
    assert dram.admit_layer(4, 0) == []
    dram.touch(4, WANT.ids, 0)  # computing layer 4: layer 3 is needed again only next token
    assert dram.admit_layer(5, 0) == [3]
    assert dram.contains_layer(0) and dram.contains_layer(5) and not dram.contains_layer(3)
    assert dram.resident_bytes() == 5 * 100


def test_plain_lru_over_cyclic_layers_thrashes():
    dram = LayerLRU(num_layers=8, capacity_layers=6, layer_bytes=100)
    pre = LayerLookahead(OnDemandConfig(), dram, num_layers=8, layer_read_bytes=100,
                         id_bytes=(1, 1, 1))
    misses = [pre.demand(t, layer, WANT) is not None for t in range(4) for layer in range(8)]
    assert all(misses)  # each layer is evicted just before it is needed again


def test_layer_window_with_the_same_dram_does_not_thrash():
    dram = _window(L=8, fixed=4, window=2)  # the same 6 layers of DRAM
    pre = LayerLookahead(LayerLookaheadConfig(depth=1), dram, num_layers=8,
                         layer_read_bytes=100, id_bytes=(1, 1, 1))
    reads = 0
    for t in range(4):
        for layer in range(8):
            reads += (pre.demand(t, layer, WANT) is not None) + len(pre.prefetch(t, layer))
    assert reads == 4 * 4  # only the 4 non-fixed layers, once per token


def test_deeper_lookahead_never_reads_a_layer_twice_per_token():
    # depth 3: the window holds the layer in use and three ahead; each of the 8 non-fixed
    # layers is read exactly once per token (a FIFO that reorders on use re-read some twice)
    for depth in (1, 2, 3):
        dram = _window(L=12, fixed=4, window=depth + 1)
        pre = LayerLookahead(LayerLookaheadConfig(depth=depth), dram, num_layers=12,
                             layer_read_bytes=100, id_bytes=(1, 1, 1))
        for t in range(4):
            reads = []
            for layer in range(12):
                d = pre.demand(t, layer, WANT)
                reads += ([d.layer] if d else []) + [r.layer for r in pre.prefetch(t, layer)]
            if t > 0:
                assert sorted(reads) == list(range(4, 12)), (depth, reads)
