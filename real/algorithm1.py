"""Algorithm 1 (paper §4.3) generalized to three precision bands: pick the (fp16, int8, int4)
split of the active set with the lowest predictive entropy at a fixed byte budget.

Candidates are the points of a grid on the simplex (step ``step``) whose mean bytes per active
neuron (``ModelSpec.neuron_bytes``, scales included) fit the budget. DECISION: only the budget's
*frontier* is scored by default, i.e. the fitting points from which no single grid step of
mass can move to a higher precision without exceeding the budget, so each candidate uses the
budget as fully as the grid allows (the paper fills the budget exactly for each ratio). Each
candidate decodes greedily from held-out prompts (dense prefill, banded sparse decode) and is
scored by Eq. 2: the entropy (nats) of the next-token distribution summed over decode steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from m2sim.errors import ConfigError
from m2sim.specs import Activation, ModelConfig, ModelSpec, QuantConfig
from m2sim.types import BANDS
from real.model import FFNPartsFn, LlamaArgs, Transformer
from real.quality import FFNTables, ScoreFn, banded_parts_fn, importance_scores

Fracs = tuple[float, float, float]  # (fp16, int8, int4) fractions of the active set


@dataclass(frozen=True, kw_only=True)
class RatioScore:
    """One candidate split and its predictive entropy."""

    fp16_frac: float
    int8_frac: float
    int4_frac: float
    bytes_per_neuron: float  # mean bytes per active neuron bundle
    entropy_nats: float  # Eq. 2, summed over every prompt's decode steps
    num_tokens: int  # decode steps scored

    @property
    def fracs(self) -> Fracs:
        return (self.fp16_frac, self.int8_frac, self.int4_frac)

    @property
    def entropy_per_token(self) -> float:
        return self.entropy_nats / self.num_tokens


@dataclass(frozen=True, kw_only=True)
class Algorithm1Result:
    budget_bytes_per_neuron: float
    keep_frac: float
    best: RatioScore
    table: tuple[RatioScore, ...]  # every scored candidate, in grid order


def spec_for(args: LlamaArgs, quant: Optional[QuantConfig] = None,
             active_frac: float = 0.5) -> ModelSpec:
    """The ``ModelSpec`` of a loaded model (only its FFN byte arithmetic matters here)."""
    cfg = ModelConfig(name="loaded", num_layers=args.n_layers, d_model=args.d_model,
                      d_ff=args.d_ff, num_heads=args.n_heads, num_kv_heads=args.n_kv_heads,
                      head_dim=args.head_dim, vocab_size=args.vocab_size,
                      activation=Activation(args.activation), tie_embeddings=args.tie_embeddings,
                      max_context=args.max_context, active_frac=active_frac)
    return ModelSpec.of(cfg, quant)


def simplex_grid(step: float) -> list[Fracs]:
    """Every (fp16, int8, int4) with entries in multiples of ``step`` summing to 1."""
    n = round(1.0 / step)
    if step <= 0 or abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 (e.g. 0.125), got {step}")
    return [(a / n, b / n, (n - a - b) / n) for a in range(n + 1) for b in range(n + 1 - a)]


def mean_neuron_bytes(spec: ModelSpec, fracs: Fracs) -> float:
    """Mean bytes of an active neuron bundle under a band split."""
    return sum(f * spec.neuron_bytes(p) for f, p in zip(fracs, BANDS))


def budget_ratios(spec: ModelSpec, budget_bytes_per_neuron: float, *, step: float = 0.125,
                  frontier_only: bool = True) -> list[Fracs]:
    """Grid splits within the budget (only its frontier by default; see the module docstring)."""
    lo, hi = (spec.neuron_bytes(p) for p in (BANDS[2], BANDS[0]))
    if not lo <= budget_bytes_per_neuron <= hi:
        raise ConfigError("algorithm1.budget_bytes_per_neuron",
                          f"{budget_bytes_per_neuron:g} bytes per active neuron is outside the "
                          f"feasible range [{lo}, {hi}] (all INT4 .. all FP16)")
    grid = simplex_grid(step)
    n = round(1.0 / step)

    def fits(fr: Fracs) -> bool:
        return mean_neuron_bytes(spec, fr) <= budget_bytes_per_neuron * (1 + 1e-12)

    def upgrades(fr: Fracs) -> list[Fracs]:
        out = []
        for src, dst in ((1, 0), (2, 1), (2, 0)):  # move one step to a higher precision
            if round(fr[src] * n) >= 1:
                c = [round(x * n) for x in fr]
                c[src] -= 1
                c[dst] += 1
                out.append(tuple(x / n for x in c))
        return out

    feasible = [fr for fr in grid if fits(fr)]
    if not frontier_only:
        return feasible
    return [fr for fr in feasible if not any(fits(up) for up in upgrades(fr))]


def _entropy_nats(logits: torch.Tensor) -> float:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum())


@torch.inference_mode()
def predictive_entropy(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                       ffn_parts_fn: Optional[FFNPartsFn]) -> tuple[float, int]:
    """Eq. 2: summed entropy of the next-token distribution over greedy decode steps.

    Prefill is dense; its distribution picks the first token and is not scored (it is the
    same for every split). Returns (entropy in nats, number of decode steps scored).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = model.tok_embeddings.weight.device
    total, count = 0.0, 0
    for prompt in prompts:
        cache = model.new_cache(batch_size=1, max_len=len(prompt) + max_new_tokens)
        tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)  # (1, T)
        logits = model(tokens, cache, 0, last_only=True)[0, -1]  # (V,)
        for pos in range(len(prompt), len(prompt) + max_new_tokens):
            step = logits.argmax().view(1, 1)  # (1, 1)
            logits = model(step, cache, pos, ffn_parts_fn=ffn_parts_fn)[0, -1]
            total += _entropy_nats(logits)
            count += 1
    return total, count


def algorithm1(model: Transformer, prompts: Sequence[Sequence[int]], *,
               budget_bytes_per_neuron: float, keep_frac: float,
               tables: Optional[FFNTables] = None, score_fn: Optional[ScoreFn] = None,
               spec: Optional[ModelSpec] = None, step: float = 0.125, max_new_tokens: int = 16,
               frontier_only: bool = True) -> Algorithm1Result:
    """Score every candidate split at the budget; return the lowest-entropy one and the table.

    Args:
        model: the model whose non-FFN weights are used (e.g. ``fp16_rounded(model)``).
        prompts: held-out prompt token ids.
        keep_frac: active fraction of each layer's neurons (the set the bands split).
        tables: quantized FFN rows (default: built from ``model``).
        score_fn: ranks neurons (default: the oracle, ``importance_scores(model)``).
        spec: byte arithmetic (default: ``spec_for(model.args)`` with the default quant).
    """
    spec = spec or spec_for(model.args)
    candidates = budget_ratios(spec, budget_bytes_per_neuron, step=step,
                               frontier_only=frontier_only)
    tables = tables or FFNTables.build(model, spec.quant)
    score_fn = score_fn or importance_scores(model)
    table = []
    for fracs in candidates:
        parts_fn = banded_parts_fn(tables, score_fn, d_ff=model.args.d_ff, keep_frac=keep_frac,
                                   fracs=fracs)
        nats, count = predictive_entropy(model, prompts, max_new_tokens, parts_fn)
        table.append(RatioScore(fp16_frac=fracs[0], int8_frac=fracs[1], int4_frac=fracs[2],
                                bytes_per_neuron=mean_neuron_bytes(spec, fracs),
                                entropy_nats=nats, num_tokens=count))
    best = min(table, key=lambda r: r.entropy_nats)
    return Algorithm1Result(budget_bytes_per_neuron=budget_bytes_per_neuron, keep_frac=keep_frac,
                            best=best, table=tuple(table))
