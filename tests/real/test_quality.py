"""Perplexity and the oracle top-k sparse FFN (real/quality.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2sim.errors import ConfigError
from m2sim.policy.bands import BandsConfig, ScoreBands
from m2sim.specs import QuantConfig
from m2sim.trace.base import ActiveSet
from m2sim.types import BANDS
from real.algorithm1 import (
    algorithm1,
    budget_ratios,
    mean_neuron_bytes,
    simplex_grid,
    spec_for,
)
from real.checkpoint import load_model
from real.model import sparse_ffn
from real.quality import (
    FFNTables,
    banded_model,
    banded_parts_fn,
    fp16_rounded,
    heldout_ids,
    heldout_text,
    importance_scores,
    oracle_topk_parts_fn,
    perplexity,
)
from real.quant import quantize_rows

SMOLLM2_TOKENS = 24  # sparse perplexity decodes token by token: keep it short


def test_heldout_text_is_english_prose_and_ids_are_a_stable_prefix():
    text = heldout_text()
    assert len(text) > 100_000 and "statement" in text
    ids = heldout_ids(lambda s: [ord(c) for c in s], 50)
    assert ids == [ord(c) for c in text[:50]]
    with pytest.raises(ValueError, match="fewer than"):
        heldout_ids(lambda s: [0], 2)


def test_dense_perplexity_is_exp_of_the_mean_next_token_nll(make_tiny_llama):
    hf, path = make_tiny_llama()
    ids = torch.randint(3, 97, (20,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        nll = F.cross_entropy(hf(ids[None]).logits[0, :-1], ids[1:])
    assert perplexity(load_model(path), ids.tolist()) == pytest.approx(math.exp(nll), rel=1e-5)


def test_oracle_keeps_exactly_the_top_k_neurons_by_importance(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    ffn = model.layers[0].feed_forward
    h = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(1))  # (B, T, d)
    parts = oracle_topk_parts_fn(model, 0.25)(0, h)
    hidden = ffn.hidden(h)  # (1, 1, 96)
    keep = hidden.abs()[0, 0].topk(24).indices
    mask = torch.zeros(96)
    mask[keep] = 1.0
    assert len(parts) == 1 and parts[0].gate.shape == (24, 64)
    torch.testing.assert_close(sparse_ffn(h, parts, ffn.act), ffn.w_down(hidden * mask),
                               atol=1e-6, rtol=0)


def test_oracle_rejects_bad_fractions_and_multi_token_inputs(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    with pytest.raises(ValueError, match="keep_frac"):
        oracle_topk_parts_fn(model, 0.0)
    with pytest.raises(ValueError, match="one token"):
        oracle_topk_parts_fn(model, 0.5)(0, torch.zeros(1, 2, 64))


@pytest.fixture(scope="module")
def smollm2_ids(smollm2_tokenizer):
    return heldout_ids(smollm2_tokenizer.encode, SMOLLM2_TOKENS)


def test_smollm2_oracle_with_every_neuron_equals_dense_perplexity(smollm2, smollm2_ids):
    dense = perplexity(smollm2, smollm2_ids)
    assert 1.0 < dense < 300.0  # a broken model sits near the vocabulary size (49152)
    every = perplexity(smollm2, smollm2_ids, ffn_parts_fn=oracle_topk_parts_fn(smollm2, 1.0))
    assert every == pytest.approx(dense, rel=1e-4)


def test_smollm2_perplexity_degrades_with_few_neurons(smollm2, smollm2_ids):
    dense = perplexity(smollm2, smollm2_ids)
    tenth = perplexity(smollm2, smollm2_ids, ffn_parts_fn=oracle_topk_parts_fn(smollm2, 0.1))
    assert tenth > 1.3 * dense  # SwiGLU is not very sparse (m2cache.md)


# ---- precision bands ---------------------------------------------------------------------
@pytest.fixture
def tiny(make_tiny_llama):
    """The tiny model rounded to FP16, its quantized FFN tables, and 20 token ids."""
    _, path = make_tiny_llama()
    model = fp16_rounded(load_model(path))
    ids = torch.randint(3, 97, (20,), generator=torch.Generator().manual_seed(0)).tolist()
    return model, FFNTables.build(model), ids


def test_heldout_slices_start_at_a_topic_boundary_and_do_not_overlap():
    encode = lambda s: [ord(c) for c in s]  # noqa: E731
    head = heldout_ids(encode, 200)
    later = heldout_ids(encode, 200, start_frac=0.5)
    text = heldout_text()
    start = text.index("".join(map(chr, later)))
    assert start > len(text) // 2 and text[start - 2:start] == "\n\n"
    assert head != later
    with pytest.raises(ValueError, match="start_frac"):
        heldout_ids(encode, 2, start_frac=1.0)


def test_tables_hold_each_precisions_dequantized_neuron_rows(tiny):
    model, tables, _ = tiny
    ffn = model.layers[1].feed_forward
    quant = QuantConfig()
    for band, p in enumerate(BANDS):
        gate, up, down = tables.rows[1][band]
        torch.testing.assert_close(gate, quantize_rows(ffn.w_gate.weight, p, quant).dequantize())
        torch.testing.assert_close(down, quantize_rows(ffn.w_down.weight.T, p, quant).dequantize())
    assert torch.equal(tables.rows[1][0][1], ffn.w_up.weight)  # FP16 of an FP16-rounded model


def test_bands_split_the_active_set_by_score_rank(tiny):
    model, tables, _ = tiny
    order = torch.randperm(96, generator=torch.Generator().manual_seed(2))
    scores = torch.empty(96)
    scores[order] = torch.arange(96, 0, -1).float()  # order[0] scores highest

    parts_fn = banded_parts_fn(tables, lambda layer, x: scores, d_ff=96, keep_frac=0.5,
                               fracs=(0.25, 0.25, 0.5))
    parts = parts_fn(0, torch.zeros(1, 1, 64))
    expect = (order[:12], order[12:24], order[24:48])  # band_counts(48) = (12, 12, 24)
    assert len(parts) == 3
    for band, (part, ids) in enumerate(zip(parts, expect)):
        torch.testing.assert_close(part.up, tables.rows[0][band][1][ids])
    only_int4 = banded_parts_fn(tables, lambda layer, x: scores, d_ff=96, keep_frac=1.0,
                                fracs=(0.0, 0.0, 1.0))(0, torch.zeros(1, 1, 64))
    assert len(only_int4) == 1 and only_int4[0].gate.shape == (96, 64)


@pytest.mark.parametrize("fracs", [(0.25, 0.25, 0.5), (0.5, 0.0, 0.5), (0.1, 0.6, 0.3)])
def test_band_split_agrees_with_the_score_bands_policy(tiny, fracs):
    model, tables, _ = tiny
    scores = torch.randn(96, generator=torch.Generator().manual_seed(5))
    parts = banded_parts_fn(tables, lambda layer, x: scores, d_ff=96, keep_frac=0.5,
                            fracs=fracs)(0, torch.zeros(1, 1, 64))
    top = scores.topk(48).indices.numpy()
    policy = ScoreBands(BandsConfig(*fracs)).assign(
        ActiveSet(top.astype(np.int32), scores.numpy()[top]))
    used = [(band, torch.as_tensor(ids, dtype=torch.long)) for band, ids in
            enumerate(policy.ids) if len(ids)]
    assert len(parts) == len(used)
    for part, (band, ids) in zip(parts, used):
        ids = ids[scores[ids].argsort(descending=True)]  # the policy's order is arbitrary
        torch.testing.assert_close(part.gate, tables.rows[0][band][0][ids])


def test_fp16_band_alone_is_the_oracle_top_k(tiny):
    model, tables, _ = tiny
    h = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(1))  # (B, T, d)
    act = model.layers[0].feed_forward.act
    banded = banded_parts_fn(tables, importance_scores(model), d_ff=96, keep_frac=0.25,
                             fracs=(1.0, 0.0, 0.0))(0, h)
    oracle = oracle_topk_parts_fn(model, 0.25)(0, h)
    torch.testing.assert_close(sparse_ffn(h, banded, act), sparse_ffn(h, oracle, act))


@pytest.mark.parametrize("keep_frac,fracs", [(0.5, (0.25, 0.25, 0.5)), (1.0, (0.0, 1.0, 0.0)),
                                             (0.3, (0.5, 0.0, 0.5))])
def test_batched_banded_model_equals_token_by_token_sparse_decoding(tiny, keep_frac, fracs):
    model, tables, ids = tiny
    scores = importance_scores(model)
    batched = perplexity(banded_model(model, tables, scores, keep_frac=keep_frac, fracs=fracs),
                         ids)
    parts_fn = banded_parts_fn(tables, scores, d_ff=96, keep_frac=keep_frac, fracs=fracs)
    assert batched == pytest.approx(perplexity(model, ids, ffn_parts_fn=parts_fn), rel=1e-4)


def test_every_neuron_in_fp16_is_the_dense_fp16_model(tiny):
    model, tables, ids = tiny
    full = banded_model(model, tables, None, keep_frac=1.0, fracs=(1.0, 0.0, 0.0))
    assert perplexity(full, ids) == pytest.approx(perplexity(model, ids), rel=1e-6)
    with pytest.raises(ValueError, match="score_fn"):
        banded_model(model, tables, None, keep_frac=0.5, fracs=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="sum to 1"):
        banded_parts_fn(tables, importance_scores(model), d_ff=96, keep_frac=0.5,
                        fracs=(0.5, 0.5, 0.5))


def test_smollm2_fp16_keeps_dense_perplexity_and_int4_is_worse(smollm2, smollm2_tokenizer):
    ids = heldout_ids(smollm2_tokenizer.encode, 64)  # batched forwards: 64 tokens are cheap
    model = fp16_rounded(smollm2)
    tables = FFNTables.build(model)

    def uniform(fracs: tuple[float, float, float]) -> float:
        return perplexity(banded_model(model, tables, None, keep_frac=1.0, fracs=fracs), ids)

    dense = perplexity(smollm2, ids)
    fp16, int8, int4 = uniform((1.0, 0.0, 0.0)), uniform((0.0, 1.0, 0.0)), uniform((0.0, 0.0, 1.0))
    assert fp16 == pytest.approx(dense, rel=0.01)
    assert int8 < int4
    assert int4 > fp16 * 1.1  # 50.5 -> 64.3 when written


# ---- Algorithm 1 ---------------------------------------------------------------------------
def test_simplex_grid_and_budget_frontier(tiny):
    model, _, _ = tiny
    spec = spec_for(model.args)
    assert len(simplex_grid(0.25)) == 15 and all(sum(g) == pytest.approx(1) for g in
                                                  simplex_grid(0.25))
    with pytest.raises(ValueError, match="step"):
        simplex_grid(0.3)
    budget = mean_neuron_bytes(spec, (0.25, 0.25, 0.5))
    feasible = budget_ratios(spec, budget, frontier_only=False)
    frontier = budget_ratios(spec, budget)
    assert set(frontier) <= set(feasible) and (0.25, 0.25, 0.5) in frontier
    assert all(mean_neuron_bytes(spec, fr) <= budget for fr in feasible)
    assert (0.0, 0.0, 1.0) in feasible and (0.0, 0.0, 1.0) not in frontier  # INT4 -> INT8 fits
    assert len(feasible) == sum(mean_neuron_bytes(spec, g) <= budget for g in simplex_grid(0.125))


def test_algorithm1_returns_the_lowest_entropy_ratio_within_budget(tiny):
    model, tables, ids = tiny
    spec = spec_for(model.args)
    budget = mean_neuron_bytes(spec, (0.25, 0.25, 0.5))
    prompts = [ids[:6], ids[6:12]]
    result = algorithm1(model, prompts, budget_bytes_per_neuron=budget, keep_frac=0.5,
                        tables=tables, spec=spec, step=0.25, max_new_tokens=4)
    candidates = budget_ratios(spec, budget, step=0.25)
    assert [r.fracs for r in result.table] == candidates
    assert result.best.entropy_nats == min(r.entropy_nats for r in result.table)
    assert result.best.bytes_per_neuron <= budget
    for r in result.table:
        assert r.num_tokens == 8 and 0.0 < r.entropy_per_token <= math.log(97) + 1e-6


def test_budgets_outside_the_feasible_range_are_refused(tiny):
    model, _, _ = tiny
    spec = spec_for(model.args)
    lo, hi = spec.neuron_bytes(BANDS[2]), spec.neuron_bytes(BANDS[0])
    for budget in (lo - 1, hi + 1):
        with pytest.raises(ConfigError, match=rf"outside the feasible range \[{lo}, {hi}\]"):
            algorithm1(model, [[5, 6]], budget_bytes_per_neuron=budget, keep_frac=0.5, spec=spec)
    assert budget_ratios(spec, lo) == [(0.0, 0.0, 1.0)]
    assert budget_ratios(spec, hi) == [(1.0, 0.0, 0.0)]
