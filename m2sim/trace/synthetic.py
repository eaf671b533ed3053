"""Synthetic activation traces with explicit, independent knobs.

Per layer, an active set of k neurons evolves token by token: a fraction ``1 - overlap_frac``
of it leaves uniformly at random and is replaced by neurons drawn by popularity (a Zipf law of
exponent ``popularity_skew`` over a random ranking of the layer's neurons) from those that were
inactive, so adjacent tokens share exactly ``k - round((1 - overlap) k)`` neurons. Scores are
log-popularity plus Gaussian jitter, so popular neurons tend to rank into the high-precision
bands. ``predictor_recall < 1`` swaps that fraction of the true set for random inactive neurons
(what an imperfect predictor emits). ``cluster_neurons = g`` makes ids name clusters of g
co-activated neurons (d_ff / g units), trading neuron resolution for simulation speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from m2sim.errors import ConfigError, check_frac, check_nonneg, check_range
from m2sim.trace.base import ActiveSet, TraceConfig

_HISTORY_TOKENS = 4  # generated tokens kept per layer for look-ahead and lagging readers


@dataclass
class SyntheticTraceConfig(TraceConfig):
    active_frac: Optional[float] = None  # None: the model's default
    overlap_frac: Optional[float] = None  # None: the model's default (paper §5.3: ~0.8)
    popularity_skew: float = 1.0  # Zipf exponent of neuron popularity; 0 = uniform
    layer_variation_frac: float = 0.1  # std of a layer's active fraction, relative to the mean
    score_jitter: float = 0.25  # per-token score noise, in units of log-popularity
    predictor_recall: float = 1.0  # fraction of truly active neurons the predictor returns
    cluster_neurons: int = 1  # neurons per id (1 = neuron resolution)

    def __post_init__(self) -> None:
        check_range("trace.active_frac", self.active_frac, 0, 1, lo_open=True, optional=True)
        check_frac("trace.overlap_frac", self.overlap_frac, optional=True)
        check_nonneg("trace.popularity_skew", self.popularity_skew)
        check_range("trace.layer_variation_frac", self.layer_variation_frac, 0, 1)
        check_nonneg("trace.score_jitter", self.score_jitter)
        check_range("trace.predictor_recall", self.predictor_recall, 0, 1, lo_open=True)
        check_range("trace.cluster_neurons", self.cluster_neurons, 1, None)


class _PopularitySampler:
    """I.i.d. draws of index i with probability p[i]: inverse CDF through a guide table.

    The guide maps each of ``4 n`` equal bins of [0, 1) to the first index whose cumulative
    probability reaches the bin's start, so each draw needs a gather and a step or two.
    """

    def __init__(self, p: np.ndarray):
        self.cdf = np.cumsum(p)
        self.cdf[-1] = 1.0
        bins = 4 * len(p)
        self.bins = bins
        self.guide = np.searchsorted(self.cdf, np.arange(bins) / bins, side="right").astype(
            np.int64)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        idx = self.guide[(u * self.bins).astype(np.int64)]
        while True:
            short = self.cdf[idx] <= u
            if not short.any():
                return idx.astype(np.int32)
            idx += short


class _LayerProcess:
    """The active-set process of one layer; advances one token at a time."""

    def __init__(self, num_ids: int, k: int, overlap: float, cfg: SyntheticTraceConfig,
                 rng: np.random.Generator):
        self.n, self.k = num_ids, k
        self.m = int(round((1.0 - overlap) * k))
        self.cfg = cfg
        self.rng = rng
        ranks = np.empty(num_ids, dtype=np.float64)
        ranks[rng.permutation(num_ids)] = np.arange(1, num_ids + 1)
        p = ranks ** -cfg.popularity_skew
        self.p = p / p.sum()
        self.log_p = np.log(self.p).astype(np.float32)
        self.sampler = _PopularitySampler(self.p)
        keys = self.log_p + rng.gumbel(size=num_ids)  # Gumbel top-k = sampling without replacement
        self.members = np.argpartition(-keys, k - 1)[:k].astype(np.int32)
        self.is_active = np.zeros(num_ids, dtype=bool)
        self.is_active[self.members] = True
        self.active_mass = float(self.p[self.members].sum())
        self.token = 0

    def step(self) -> None:
        """Advance to the next token: replace ``m`` members, keep the rest."""
        if self.m:
            leave = self.rng.choice(self.k, size=self.m, replace=False)
            leaving = self.members[leave]
            enter = self._draw_inactive(self.m)  # marks them active; leavers are still active
            self.is_active[leaving] = False
            self.members[leave] = enter
            self.active_mass = float(self.p[self.members].sum())
        self.token += 1

    def _draw_inactive(self, m: int) -> np.ndarray:
        """``m`` distinct inactive ids drawn by popularity without replacement; marks them active."""
        free_mass = max(1.0 - self.active_mass, 1e-12)
        parts: list[np.ndarray] = []
        need = m
        for _ in range(4):
            n_draw = int(need / free_mass * 1.25) + 16
            cand = self._sample_by_popularity(n_draw)
            cand = cand[~self.is_active[cand]]
            _, first = np.unique(cand, return_index=True)
            cand = cand[np.sort(first)][:need]
            self.is_active[cand] = True
            parts.append(cand)
            need -= len(cand)
            if need == 0:
                return np.concatenate(parts)
            free_mass = max(free_mass - float(self.p[cand].sum()), 1e-12)
        # Heavy skew left little popular mass inactive: finish exactly with Gumbel top-k.
        free = np.flatnonzero(~self.is_active)
        keys = self.log_p[free] + self.rng.gumbel(size=len(free))
        last = free[np.argpartition(-keys, need - 1)[:need]].astype(np.int32)
        self.is_active[last] = True
        parts.append(last)
        return np.concatenate(parts)

    def _sample_by_popularity(self, n: int) -> np.ndarray:
        return self.sampler.draw(self.rng, n)

    def observe(self) -> ActiveSet:
        """The predictor's scored view of the current true set."""
        ids = self.members.copy()
        if self.cfg.predictor_recall < 1.0:
            n_false = int(round((1.0 - self.cfg.predictor_recall) * self.k))
            if n_false:
                pos = self.rng.choice(self.k, size=n_false, replace=False)
                free = np.flatnonzero(~self.is_active)
                ids[pos] = self.rng.choice(free, size=n_false, replace=False)
        scores = self.log_p[ids]
        if self.cfg.score_jitter:
            scores = scores + self.cfg.score_jitter * self.rng.standard_normal(
                len(ids), dtype=np.float32)
        return ActiveSet(ids, scores.astype(np.float32, copy=False))

    def stationary_frequency(self) -> np.ndarray:
        """Mean-field P(active) per id: inflow (1-pi) m p / P_free equals outflow pi m / k."""
        # pi_i = a p_i / (1 + a p_i); find a with sum(pi) = k by bisection on log a.
        lo, hi = -50.0, 50.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            a = np.exp(mid)
            if (a * self.p / (1 + a * self.p)).sum() < self.k:
                lo = mid
            else:
                hi = mid
        a = np.exp(0.5 * (lo + hi))
        return a * self.p / (1 + a * self.p)


class SyntheticTrace:
    """An ``ActivationSource`` over ``num_layers`` independent layer processes."""

    def __init__(self, cfg: SyntheticTraceConfig, *, num_layers: int, d_ff: int,
                 default_active_frac: float, default_overlap_frac: float, seed: int):
        if d_ff % cfg.cluster_neurons:
            raise ConfigError("trace.cluster_neurons",
                              f"{cfg.cluster_neurons} must divide d_ff={d_ff}")
        self.cfg = cfg
        self.neurons_per_id = cfg.cluster_neurons
        self.num_layers = num_layers
        self.num_neurons = d_ff // cfg.cluster_neurons
        active = cfg.active_frac if cfg.active_frac is not None else default_active_frac
        self.overlap_frac = (cfg.overlap_frac if cfg.overlap_frac is not None
                             else default_overlap_frac)
        sizing = np.random.default_rng([seed, 0x5EED])
        z = sizing.standard_normal(num_layers)
        fracs = np.clip(active * (1 + cfg.layer_variation_frac * z), 0.0, 1.0)
        self._k = np.clip(np.round(fracs * self.num_neurons), 1, self.num_neurons).astype(int)
        self._seed = seed
        self._procs: list[Optional[_LayerProcess]] = [None] * num_layers
        self._history: list[dict[int, ActiveSet]] = [{} for _ in range(num_layers)]

    def _proc(self, layer: int) -> _LayerProcess:
        proc = self._procs[layer]
        if proc is None:
            rng = np.random.default_rng([self._seed, layer, 0xAC7])
            proc = _LayerProcess(self.num_neurons, int(self._k[layer]), self.overlap_frac,
                                 self.cfg, rng)
            self._procs[layer] = proc
            self._history[layer][0] = proc.observe()
        return proc

    def active(self, token: int, layer: int) -> ActiveSet:
        proc = self._proc(layer)
        hist = self._history[layer]
        if token in hist:
            return hist[token]
        if token < proc.token:
            raise ValueError(f"synthetic trace: token {token} of layer {layer} is no longer held "
                             f"(now at token {proc.token}; sources are read forward)")
        while proc.token < token:
            proc.step()
            hist[proc.token] = proc.observe()
            hist.pop(proc.token - _HISTORY_TOKENS, None)
        return hist[token]

    def max_active(self, layer: int) -> int:
        return int(self._k[layer])

    def neuron_frequency(self, layer: int) -> np.ndarray:
        return self._proc(layer).stationary_frequency()
