"""A seeded random LLaMA shaped like ``conf/model/tiny.yaml`` (for tests and golden traces)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_llama(out: Path, *, seed: int = 0) -> Path:
    """Save a random 4-layer LLaMA (d 64, d_ff 256, 4 heads / 2 KV, vocab 512) with
    ``save_pretrained``; returns the directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=256,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-5,
                      initializer_range=0.1, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    return out
