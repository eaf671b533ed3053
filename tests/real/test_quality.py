"""Perplexity and the oracle top-k sparse FFN (real/quality.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from real.checkpoint import load_model
from real.model import sparse_ffn
from real.quality import heldout_ids, heldout_text, oracle_topk_parts_fn, perplexity

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
