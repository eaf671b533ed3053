"""Perplexity on held-out English text, with the dense FFN or an oracle top-k sparse FFN.

Text: the Python reference prose shipped in the stdlib (``pydoc_data.topics``), so no download.
The oracle keeps, per token and layer, the ``keep_frac`` of FFN neurons with the largest true
importance |act(gate x) * up x| and runs them through ``sparse_ffn`` (an upper bound on what a
predictor can reach). Sparse runs decode one token at a time, every token through the sparse
path; the dense run is one batched forward. Perplexity = exp(mean next-token NLL in nats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from real.model import FFNPart, FFNPartsFn, Transformer


def heldout_text() -> str:
    """Every pydoc topic, in sorted order, separated by blank lines (~465k characters)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def heldout_ids(encode, num_tokens: int) -> list[int]:
    """The first ``num_tokens`` token ids of ``heldout_text()`` under ``encode(text)``."""
    text = heldout_text()
    ids = encode(text[: num_tokens * 12])  # >= 2 characters per token on this text
    if len(ids) < num_tokens:
        ids = encode(text)
    if len(ids) < num_tokens:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than {num_tokens}")
    return ids[:num_tokens]


def oracle_topk_parts_fn(model: Transformer, keep_frac: float) -> FFNPartsFn:
    """Per layer, one FP part with the top ``keep_frac`` neurons by |act(gate x) * up x|.

    Needs one token per call (decode), since each token keeps its own neurons.
    """
    if not 0.0 < keep_frac <= 1.0:
        raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac}")
    k = max(1, round(keep_frac * model.args.d_ff))

    def parts_fn(layer: int, h_normed: torch.Tensor) -> Sequence[FFNPart]:
        if h_normed.shape[:2] != (1, 1):
            raise ValueError(f"oracle top-k needs one token of batch 1, got input "
                             f"{tuple(h_normed.shape)}")
        ffn = model.layers[layer].feed_forward
        importance = ffn.hidden(h_normed).abs()[0, 0]  # (f,)
        return [ffn.part(importance.topk(k).indices)]

    return parts_fn


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL: logits (T, V), targets (T,)."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")


@torch.inference_mode()
def perplexity(model: Transformer, ids: Sequence[int], *,
               ffn_parts_fn: Optional[FFNPartsFn] = None) -> float:
    """Perplexity of ``ids[1:]`` given its prefix; sparse (token by token) if ``ffn_parts_fn``."""
    if len(ids) < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    device = model.tok_embeddings.weight.device
    tokens = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
    cache = model.new_cache(batch_size=1, max_len=len(ids))
    if ffn_parts_fn is None:
        logits = model(tokens[:, :-1], cache, 0)[0]  # (T-1, V)
        nll = _nll(logits, tokens[0, 1:])
    else:
        nll = torch.zeros((), device=device)
        for t in range(len(ids) - 1):
            logits = model(tokens[:, t:t + 1], cache, t, ffn_parts_fn=ffn_parts_fn)[0]  # (1, V)
            nll = nll + _nll(logits, tokens[0, t + 1:t + 2])
    return math.exp(float(nll) / (len(ids) - 1))
