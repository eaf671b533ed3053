"""Greedy generation with a KV cache: one dense prefill, then one decode step per token.

Decode steps may run the sparse FFN through ``ffn_parts_fn`` (real/model.py); prefill is
always dense (m2cache.md: sparsity applies to decode). Token ids are plain ints; batch size 1.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Optional

import torch

from real.model import FFNPartsFn, FFNRecordFn, Transformer


class ContextLengthError(ValueError):
    """The prompt plus the tokens to generate do not fit the model's context."""


@torch.inference_mode()
def greedy_generate(model: Transformer, prompt_ids: Sequence[int], max_new_tokens: int, *,
                    stop_ids: Collection[int] = (), ffn_parts_fn: Optional[FFNPartsFn] = None,
                    ffn_record_fn: Optional[FFNRecordFn] = None) -> list[int]:
    """Generate up to ``max_new_tokens`` ids by argmax; stop after emitting one of ``stop_ids``.

    Returns:
        The generated ids only (the prompt excluded), including a final stop id if one occurred.
    """
    if not prompt_ids:
        raise ValueError("greedy_generate needs a non-empty prompt")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    total = len(prompt_ids) + max_new_tokens
    if total > model.args.max_context:
        raise ContextLengthError(f"prompt of {len(prompt_ids)} tokens + {max_new_tokens} new "
                                 f"tokens = {total} exceeds the model's context of "
                                 f"{model.args.max_context} tokens")
    if max_new_tokens == 0:
        return []
    device = model.tok_embeddings.weight.device
    cache = model.new_cache(batch_size=1, max_len=total)
    tokens = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    logits = model(tokens, cache, 0, ffn_record_fn=ffn_record_fn, last_only=True)  # (1, 1, V)
    out: list[int] = []
    pos = len(prompt_ids)
    while True:
        next_id = int(logits[0, -1].argmax())
        out.append(next_id)
        if len(out) == max_new_tokens or next_id in stop_ids:
            return out
        step = torch.tensor([[next_id]], dtype=torch.long, device=device)  # (1, 1)
        logits = model(step, cache, pos, ffn_parts_fn=ffn_parts_fn, ffn_record_fn=ffn_record_fn)
        pos += 1
