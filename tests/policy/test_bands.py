"""Precision bands split the active set by score rank."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2sim.errors import ConfigError
from m2sim.policy.bands import BandsConfig, ScoreBands, band_counts
from m2sim.trace.base import ActiveSet


def test_bands_split_100_active_ids_25_25_50_by_score():
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:100].astype(np.int32)
    scores = rng.random(100).astype(np.float32)
    b = ScoreBands(BandsConfig()).assign(ActiveSet(ids, scores))
    assert b.counts == (25, 25, 50)
    score_of = dict(zip(ids.tolist(), scores.tolist()))
    lo16 = min(score_of[i] for i in b.ids[0].tolist())
    hi8, lo8 = (max(score_of[i] for i in b.ids[1].tolist()),
                min(score_of[i] for i in b.ids[1].tolist()))
    hi4 = max(score_of[i] for i in b.ids[2].tolist())
    assert lo16 >= hi8 and lo8 >= hi4
    assert sorted(np.concatenate(b.ids).tolist()) == sorted(ids.tolist())


def test_uniform_band_keeps_every_id():
    ids = np.arange(7, dtype=np.int32)
    b = ScoreBands(BandsConfig(0.0, 0.0, 1.0)).assign(ActiveSet(ids, np.zeros(7, np.float32)))
    assert b.counts == (0, 0, 7)


@given(st.integers(0, 5000), st.floats(0, 1), st.floats(0, 1))
def test_band_counts_always_sum_to_n(n, a, b):
    f16 = a
    f8 = (1 - a) * b
    counts = band_counts(n, (f16, f8, 1 - f16 - f8))
    assert sum(counts) == n and min(counts) >= 0


@pytest.mark.parametrize("fracs", [(0.5, 0.5, 0.5), (-0.1, 0.6, 0.5), (1.2, 0.0, -0.2)])
def test_bad_bands_name_the_field(fracs):
    with pytest.raises(ConfigError, match="policy.bands"):
        BandsConfig(*fracs)
