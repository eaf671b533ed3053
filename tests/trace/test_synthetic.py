"""Synthetic traces honour their knobs exactly where they are exact, and are deterministic."""

import numpy as np
import pytest

from m2sim.trace import SyntheticTrace, SyntheticTraceConfig


def _trace(seed=0, **knobs):
    cfg = SyntheticTraceConfig(**knobs)
    return SyntheticTrace(cfg, num_layers=3, d_ff=1024, default_active_frac=0.25,
                          default_overlap_frac=0.8, seed=seed)


@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.8, 1.0])
def test_adjacent_tokens_share_exactly_the_overlap(overlap):
    tr = _trace(overlap_frac=overlap, layer_variation_frac=0.0)
    for t in range(1, 6):
        a, b = tr.active(t - 1, 1), tr.active(t, 1)
        shared = len(np.intersect1d(a.ids, b.ids))
        assert shared == len(b) - round((1 - overlap) * len(b))


def test_active_fraction_and_unique_ids():
    tr = _trace(active_frac=0.1, layer_variation_frac=0.0)
    a = tr.active(4, 0)
    assert len(a) == round(0.1 * 1024) == tr.max_active(0)
    assert len(np.unique(a.ids)) == len(a)


def test_same_seed_same_trace_and_order_of_reads_does_not_matter():
    a, b = _trace(seed=7), _trace(seed=7)
    for t in range(3):
        for layer in (2, 0, 1):
            assert np.array_equal(a.active(t, layer).ids, b.active(t, layer).ids)
    c = _trace(seed=8)
    assert not np.array_equal(a.active(2, 0).ids, c.active(2, 0).ids)


def test_popular_neurons_are_active_more_often():
    tr = _trace(popularity_skew=1.2, layer_variation_frac=0.0)
    counts = np.zeros(1024)
    for t in range(200):
        counts[tr.active(t, 0).ids] += 1
    freq = tr.neuron_frequency(0)
    top = np.argsort(-freq)[:50]
    bottom = np.argsort(freq)[:500]
    assert counts[top].mean() > 5 * counts[bottom].mean()
    # the mean-field frequency predicts the measured one
    assert np.corrcoef(freq, counts / 200)[0, 1] > 0.9


def test_recall_below_one_lowers_adjacent_overlap():
    exact = _trace(predictor_recall=1.0)
    noisy = _trace(predictor_recall=0.7)

    def overlap(tr):
        return np.mean([len(np.intersect1d(tr.active(t - 1, 0).ids, tr.active(t, 0).ids))
                        / len(tr.active(t, 0)) for t in range(1, 20)])

    assert overlap(noisy) < overlap(exact) - 0.1


def test_clusters_divide_the_id_space():
    tr = SyntheticTrace(SyntheticTraceConfig(cluster_neurons=8), num_layers=1, d_ff=1024,
                        default_active_frac=0.25, default_overlap_frac=0.8, seed=0)
    assert tr.num_neurons == 128 and tr.neurons_per_id == 8
    assert tr.active(0, 0).ids.max() < 128


def test_reading_a_token_that_was_dropped_is_an_error():
    tr = _trace()
    tr.active(10, 0)
    with pytest.raises(ValueError, match="no longer held"):
        tr.active(1, 0)
