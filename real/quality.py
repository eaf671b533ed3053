"""Perplexity on held-out English text: dense, oracle top-k, and FP16/INT8/INT4 precision bands.

Text: the Python reference prose shipped in the stdlib (``pydoc_data.topics``), so no download;
``heldout_ids(start_frac=...)`` cuts disjoint slices of it (evaluation, training, prompts).
The oracle keeps, per token and layer, the ``keep_frac`` of FFN neurons with the largest true
importance |act(gate x) * up x| and runs them through ``sparse_ffn`` (an upper bound on what a
predictor can reach). Bands: any score (oracle or predictor) ranks the active set, whose top
fractions run in FP16, INT8 and INT4 rows quantized with ``real.quant`` (``FFNTables``).
Sparse runs through ``ffn_parts_fn`` decode one token at a time; ``banded_model`` computes the
same thing for all tokens in one batched forward (masked dense bands). Perplexity = exp(mean
next-token NLL in nats).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from m2sim.policy.bands import band_counts
from m2sim.specs import QuantConfig
from m2sim.types import BANDS, Precision
from real.model import ACTIVATIONS, FFNPart, FFNPartsFn, Transformer
from real.quant import quantize_rows


def heldout_text() -> str:
    """Every pydoc topic, in sorted order, separated by blank lines (~465k characters)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def topic_start(text: str, start_frac: float) -> int:
    """Index of the first topic (after a blank line) at or after ``start_frac`` of ``text``;
    0 for ``start_frac`` = 0, ``len(text)`` when no topic starts after it."""
    if not 0.0 <= start_frac < 1.0:
        raise ValueError(f"start_frac must be in [0, 1), got {start_frac}")
    if start_frac == 0.0:
        return 0
    cut = text.find("\n\n", int(start_frac * len(text)))
    return cut + 2 if cut >= 0 else len(text)


def heldout_ids(encode, num_tokens: int, *, start_frac: float = 0.0) -> list[int]:
    """The first ``num_tokens`` token ids of ``heldout_text()`` under ``encode(text)``.

    With ``start_frac`` > 0 the text starts at the first topic boundary (blank line) after that
    fraction of its characters: disjoint slices for training, evaluation and prompts.
    """
    text = heldout_text()
    text = text[topic_start(text, start_frac):]
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


# ---- precision bands: FP16 / INT8 / INT4 neurons ranked by a score -------------------------
# Scores rank neurons, higher = more important: the oracle's importance or a predictor's logits.
ScoreFn = Callable[[int, torch.Tensor], torch.Tensor]  # (layer, x (..., d)) -> (..., f)


def importance_scores(model: Transformer) -> ScoreFn:
    """The oracle's score: true importance |act(gate x) * up x| under ``model``'s weights."""
    return lambda layer, x: model.layers[layer].feed_forward.hidden(x).abs()


def _share(model: Transformer, state: Optional[dict[str, torch.Tensor]] = None) -> Transformer:
    """A new Transformer holding ``state`` (default: ``model``'s own tensors, shared)."""
    with torch.device("meta"):
        twin = Transformer(model.args)
    twin.load_state_dict(model.state_dict() if state is None else state, strict=True, assign=True)
    return twin.eval().requires_grad_(False)


def fp16_rounded(model: Transformer) -> Transformer:
    """A copy with every weight rounded to FP16 (kept in ``model``'s dtype): the FP16 baseline."""
    return _share(model, {k: v.to(torch.float16).to(v.dtype)
                          for k, v in model.state_dict().items()})


@dataclass(frozen=True, eq=False)
class FFNTables:
    """Every FFN neuron of every layer quantized at each precision and dequantized to float.

    ``rows[layer][band]`` is (gate, up, down), each (f, d) with down's columns stored as rows,
    band in ``BANDS`` order (FP16, INT8, INT4); quantized per neuron row with ``real.quant``, so
    gathering rows equals quantizing the gathered bundles (what the store holds).
    """

    rows: tuple[tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...], ...]

    @staticmethod
    def build(model: Transformer, quant: Optional[QuantConfig] = None) -> FFNTables:
        quant = quant or QuantConfig()
        dtype = model.tok_embeddings.weight.dtype

        def deq(w: torch.Tensor, p: Precision) -> torch.Tensor:
            return quantize_rows(w.float(), p, quant).dequantize(torch.float32).to(dtype)

        rows = []
        for block in model.layers:
            ffn = block.feed_forward
            mats = (ffn.w_gate.weight, ffn.w_up.weight, ffn.w_down.weight.T)  # each (f, d)
            rows.append(tuple(tuple(deq(w, p).contiguous() for w in mats) for p in BANDS))
        return FFNTables(tuple(rows))

    def part(self, layer: int, band: int, ids: torch.Tensor) -> FFNPart:
        gate, up, down = (w.index_select(0, ids) for w in self.rows[layer][band])  # (k_b, d)
        return FFNPart(gate=gate, up=up, down=down)


def _check_band_args(keep_frac: float, fracs: tuple[float, float, float]) -> None:
    if not 0.0 < keep_frac <= 1.0:
        raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac}")
    if min(fracs) < 0.0 or abs(sum(fracs) - 1.0) > 1e-6:
        raise ValueError(f"band fractions must be >= 0 and sum to 1, got {fracs}")


def banded_parts_fn(tables: FFNTables, score_fn: ScoreFn, *, d_ff: int, keep_frac: float,
                    fracs: tuple[float, float, float]) -> FFNPartsFn:
    """Per layer and token, the top ``keep_frac`` neurons by score, split by rank into bands.

    The top ``fracs[0]`` of the active set run in FP16, the next ``fracs[1]`` in INT8, the rest
    in INT4 (``band_counts``, as ``ScoreBands``). Needs one token per call (decode).
    """
    _check_band_args(keep_frac, fracs)
    k = max(1, round(keep_frac * d_ff))
    counts = band_counts(k, fracs)

    def parts_fn(layer: int, h_normed: torch.Tensor) -> Sequence[FFNPart]:
        if h_normed.shape[:2] != (1, 1):
            raise ValueError(f"banded top-k needs one token of batch 1, got input "
                             f"{tuple(h_normed.shape)}")
        ranked = score_fn(layer, h_normed).reshape(-1).topk(k).indices  # (k,), best first
        bands = ranked.split(counts)
        return [tables.part(layer, b, ids) for b, ids in enumerate(bands) if len(ids)]

    return parts_fn


class _BandDown(nn.Module):
    """Down projection of band-concatenated hidden units: (..., nb * f) -> (..., d)."""

    def __init__(self, downs: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.downs = list(downs)  # each (f, d)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        f = self.downs[0].shape[0]
        return sum(hidden[..., i * f:(i + 1) * f] @ d for i, d in enumerate(self.downs))


class BandedFFN(nn.Module):
    """Drop-in for ``FeedForward`` computing ``banded_parts_fn``'s result for many tokens at once.

    Every band's hidden units are computed densely and masked per token (the active neurons of
    that band), so one batched forward equals token-by-token sparse decoding, only faster.
    """

    def __init__(self, layer: int, tables: FFNTables, score_fn: Optional[ScoreFn], *,
                 act: Callable[[torch.Tensor], torch.Tensor], keep_frac: float,
                 fracs: tuple[float, float, float]) -> None:
        super().__init__()
        rows = tables.rows[layer]
        f = rows[0][0].shape[0]
        self.layer, self.act, self.score_fn, self.f = layer, act, score_fn, f
        self.k = max(1, round(keep_frac * f))
        counts = band_counts(self.k, fracs)
        used = [b for b, c in enumerate(counts) if c]
        self.rows = [rows[b] for b in used]
        # rank r of the active set -> its band's slot among the used ones
        self.slot_of_rank = torch.repeat_interleave(torch.arange(len(used)),
                                                    torch.tensor([counts[b] for b in used]))
        self.full = self.k == f and len(used) == 1  # no ranking needed
        if not self.full and score_fn is None:
            raise ValueError("a score_fn is needed unless every neuron runs in one precision")
        self.w_down = _BandDown([r[2] for r in self.rows])

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., nb * f): each used band's hidden units, zero off its neurons."""
        h = torch.cat([self.act(x @ g.T) * (x @ u.T) for g, u, _ in self.rows], dim=-1)
        if self.full:
            return h
        ranked = self.score_fn(self.layer, x).topk(self.k, dim=-1).indices  # (..., k)
        mask = torch.zeros_like(h)
        mask.scatter_(-1, ranked + self.slot_of_rank.to(x.device) * self.f, 1.0)
        return h * mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(self.hidden(x))


def banded_model(model: Transformer, tables: FFNTables, score_fn: Optional[ScoreFn], *,
                 keep_frac: float, fracs: tuple[float, float, float]) -> Transformer:
    """``model`` (sharing its weights) with every FFN a ``BandedFFN``; use its dense path.

    ``perplexity(banded_model(...), ids)`` equals ``perplexity(model, ids, ffn_parts_fn=
    banded_parts_fn(...))`` up to float rounding, in one batched forward.
    """
    _check_band_args(keep_frac, fracs)
    twin = _share(model)
    act = ACTIVATIONS[model.args.activation]
    for layer, block in enumerate(twin.layers):
        block.feed_forward = BandedFFN(layer, tables, score_fn, act=act, keep_frac=keep_frac,
                                       fracs=fracs)
    return twin
