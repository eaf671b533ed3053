"""A seeded random LLaMA of any shape, saved with ``save_pretrained`` (benchmarks, tests).

``save_random_llama(out, model_cfg)`` builds ``LlamaForCausalLM`` from an m2sim ``ModelConfig``
(shapes, activation, tied embeddings), initializes it like transformers does (normal, std
``init_std``), and saves it as FP16 safetensors without a tokenizer (``run_real`` then uses
fixed prompt ids). Built layer by layer in FP16, so peak memory stays near the model's size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m2sim.specs import ModelConfig


def save_random_llama(out: Path, cfg: ModelConfig, *, seed: int = 0, init_std: float = 0.02,
                      max_shard_size: str = "2GB") -> Path:
    """Save a random LLaMA shaped like ``cfg`` to ``out``; returns ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim or cfg.d_model // cfg.num_heads,
        hidden_act=cfg.activation.value, max_position_embeddings=cfg.max_context,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, initializer_range=init_std,
        tie_word_embeddings=cfg.tie_embeddings, torch_dtype="float16")
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_cfg)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            t = torch.ones(p.shape, dtype=torch.float16)
        else:
            t = (torch.randn(p.shape, generator=gen) * init_std).to(torch.float16)
        state[name] = t
    model.load_state_dict(state, assign=True, strict=False)
    if cfg.tie_embeddings:  # assign=True replaced the shared tensor: tie the LM head again
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(out, max_shard_size=max_shard_size)
    return Path(out)
