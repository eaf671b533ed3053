"""Parity of real.model against transformers' LlamaForCausalLM, and of the sparse FFN path.

Reference: transformers' LlamaForCausalLM, float32 on CPU. Tolerances on logits: tiny random
models atol 1e-5 (observed <= 1.4e-6 on logits up to ~3); SmolLM2-135M from its GGUF atol 1e-4
on logits up to ~33 (observed 0.0 single-threaded; other thread counts may reorder sums).
Greedy tokens must be identical.
"""

from __future__ import annotations

import pytest
import torch

from real.checkpoint import load_model
from real.generate import ContextLengthError, greedy_generate
from real.model import ACTIVATIONS, FFNPart, record_ffn, sparse_ffn

TINY_ATOL = 1e-5
SMOLLM2_ATOL = 1e-4
PROMPT = "The capital of France is"

TINY_VARIANTS = {
    "gqa-silu-untied": {},
    "tied-embeddings": {"tie": True},
    "relu-wide-heads": {"act": "relu", "head_dim": 32},  # q_dim = 128 != d_model = 64
}


def _tokens(batch: int, length: int, seed: int = 0, vocab: int = 97) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=gen)  # (B, T)


@torch.no_grad()
def _ours_logits(model, tokens: torch.Tensor, **kw) -> torch.Tensor:
    cache = model.new_cache(batch_size=tokens.shape[0], max_len=tokens.shape[1])
    return model(tokens, cache, 0, **kw)


@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_tiny_logits_match_transformers(make_tiny_llama, variant):
    hf, path = make_tiny_llama(**TINY_VARIANTS[variant])
    model = load_model(path)
    tokens = _tokens(2, 12)
    with torch.no_grad():
        ref = hf(tokens).logits
    got = _ours_logits(model, tokens)
    assert ref.abs().max() > 0.1  # logits are not trivially small
    torch.testing.assert_close(got, ref, atol=TINY_ATOL, rtol=0)


def test_tiny_incremental_decode_matches_full_forward(make_tiny_llama):
    hf, path = make_tiny_llama()
    model = load_model(path)
    tokens = _tokens(1, 12, seed=1)
    with torch.no_grad():
        ref = hf(tokens).logits  # (1, 12, V), no cache
        cache = model.new_cache(max_len=12)
        steps = [model(tokens[:, :5], cache, 0)]  # prefill 5, then one token at a time
        steps += [model(tokens[:, t:t + 1], cache, t) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), ref, atol=TINY_ATOL, rtol=0)


@pytest.mark.parametrize("variant", ["gqa-silu-untied", "relu-wide-heads"])
def test_tiny_greedy_generation_matches_transformers(make_tiny_llama, variant):
    hf, path = make_tiny_llama(**TINY_VARIANTS[variant])
    model = load_model(path)
    prompt = _tokens(1, 6, seed=2)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, 6:].tolist()
    assert len(set(ref)) > 1  # a degenerate repeat would not test the cache
    assert greedy_generate(model, prompt[0].tolist(), 16) == ref


def test_generate_stops_after_a_stop_id(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    full = greedy_generate(model, [5, 6, 7], 16)
    stop = full[5]
    cut = greedy_generate(model, [5, 6, 7], 16, stop_ids={stop})
    assert cut == full[:full.index(stop) + 1]


def test_generate_rejects_too_long_context(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)  # max_context = 48
    with pytest.raises(ContextLengthError, match="40 tokens \\+ 9 new tokens = 49 exceeds"):
        greedy_generate(model, list(range(3, 43)), 9)
    assert len(greedy_generate(model, list(range(3, 43)), 8)) == 8


def test_smollm2_logits_match_transformers_gguf(smollm2, smollm2_hf, smollm2_tokenizer):
    ids = smollm2_tokenizer.encode("Sustainable inference reuses old GPUs; the KV cache holds")
    tokens = torch.tensor([ids])
    with torch.no_grad():
        ref = smollm2_hf(tokens).logits
    got = _ours_logits(smollm2, tokens)
    assert ref.abs().max() > 5
    torch.testing.assert_close(got, ref, atol=SMOLLM2_ATOL, rtol=0)


def test_smollm2_greedy_tokens_match_transformers_gguf(smollm2, smollm2_hf, smollm2_tokenizer):
    ids = smollm2_tokenizer.encode(PROMPT)
    with torch.no_grad():
        ref = smollm2_hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                  pad_token_id=smollm2_tokenizer.eos_id)[0, len(ids):].tolist()
    got = greedy_generate(smollm2, ids, 16, stop_ids={smollm2_tokenizer.eos_id})
    assert got == ref
    assert "Paris" in smollm2_tokenizer.decode(got)


# ---- sparse FFN --------------------------------------------------------------------------
class _ScaledRows:
    """A stand-in for real/quant.py rows: stores 4x the weights, dequantize() undoes it."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.stored = rows * 4

    def dequantize(self) -> torch.Tensor:
        return self.stored / 4


@pytest.fixture
def tiny_ffn(make_tiny_llama):
    _, path = make_tiny_llama()
    return load_model(path).layers[1].feed_forward


def _x(n_tokens: int = 3) -> torch.Tensor:
    return torch.randn(1, n_tokens, 64, generator=torch.Generator().manual_seed(3))  # (B, T, d)


def test_sparse_ffn_with_every_neuron_in_one_part_equals_dense(tiny_ffn):
    x = _x()
    parts = [tiny_ffn.part(torch.arange(96))]
    torch.testing.assert_close(sparse_ffn(x, parts, tiny_ffn.act), tiny_ffn(x), atol=1e-6, rtol=0)


def test_sparse_ffn_on_a_random_subset_equals_masked_dense(tiny_ffn):
    x = _x()
    ids = torch.randperm(96, generator=torch.Generator().manual_seed(4))[:40]
    mask = torch.zeros(96)
    mask[ids] = 1.0
    ref = tiny_ffn.w_down(tiny_ffn.hidden(x) * mask)  # dense with inactive neurons zeroed
    fp, int8, int4 = tiny_ffn.part(ids[:10]), tiny_ffn.part(ids[10:20]), tiny_ffn.part(ids[20:])
    quantized = [FFNPart(gate=_ScaledRows(p.gate), up=_ScaledRows(p.up), down=_ScaledRows(p.down))
                 for p in (int8, int4)]
    empty = tiny_ffn.part(ids[:0])
    got = sparse_ffn(x, [fp, *quantized, empty], tiny_ffn.act)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert (got - tiny_ffn(x)).abs().max() > 1e-3  # the subset really differs from dense


def test_sparse_ffn_rejects_mismatched_rows(tiny_ffn):
    part = tiny_ffn.part(torch.arange(8))
    bad = FFNPart(gate=part.gate, up=part.up[:7], down=part.down)
    with pytest.raises(ValueError, match="FFNPart rows"):
        sparse_ffn(_x(), [bad], ACTIVATIONS["silu"])


def test_parts_hook_chooses_sparse_layers_and_record_hook_sees_dense_ones(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    tokens = _tokens(1, 4, seed=5)
    ids = torch.arange(0, 96, 2)
    recorded = {}

    def parts_fn(layer, h_normed):  # layer 1 sparse (every other neuron), layer 0 dense
        return [model.layers[1].feed_forward.part(ids)] if layer == 1 else None

    def record_fn(layer, h_normed, importance):
        recorded[layer] = (h_normed, importance)

    dense = _ours_logits(model, tokens)
    every = _ours_logits(model, tokens, ffn_parts_fn=lambda layer, h: [
        model.layers[layer].feed_forward.part(torch.arange(96))])
    torch.testing.assert_close(every, dense, atol=1e-5, rtol=0)
    sparse = _ours_logits(model, tokens, ffn_parts_fn=parts_fn, ffn_record_fn=record_fn)
    assert (sparse - dense).abs().max() > 1e-3
    assert list(recorded) == [0]  # the sparse layer reports nothing
    h_normed, importance = recorded[0]
    assert importance.shape == (1, 4, 96)
    ffn = model.layers[0].feed_forward
    expected = (ffn.act(h_normed @ ffn.w_gate.weight.T) * (h_normed @ ffn.w_up.weight.T)).abs()
    torch.testing.assert_close(importance, expected)


def test_record_ffn_returns_each_layers_input_and_importance_in_order(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    tokens = _tokens(1, 7, seed=6)
    inputs, importance = record_ffn(model, tokens)
    assert inputs.shape == (2, 7, 64) and importance.shape == (2, 7, 96)
    for layer, block in enumerate(model.layers):
        expected = block.feed_forward.hidden(inputs[layer]).abs()
        torch.testing.assert_close(importance[layer], expected, atol=1e-6, rtol=0)
    assert (importance[0] - importance[1]).abs().max() > 1e-3  # distinct layers
