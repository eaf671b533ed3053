"""Choosing an activation source from the ``trace`` config group."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from m2sim.specs import ModelConfig
from m2sim.trace.base import ActivationSource, TraceConfig
from m2sim.trace.file import RecordedTrace
from m2sim.trace.synthetic import SyntheticTrace, SyntheticTraceConfig


@dataclass
class ReplayTraceConfig(TraceConfig):
    path: str = MISSING  # a .m2trace file written by the real backend or write_trace


def build_source(cfg: TraceConfig, model: ModelConfig, seed: int) -> ActivationSource:
    """The activation source a run reads (a fresh one per run: sources hold state)."""
    if isinstance(cfg, SyntheticTraceConfig):
        return SyntheticTrace(cfg, num_layers=model.num_layers, d_ff=model.d_ff,
                              default_active_frac=model.active_frac,
                              default_overlap_frac=model.overlap_frac, seed=seed)
    if isinstance(cfg, ReplayTraceConfig):
        trace = RecordedTrace(cfg.path)
        trace.check_model(model=model.name, num_layers=model.num_layers, d_ff=model.d_ff,
                          d_model=model.d_model)
        return trace
    raise TypeError(f"unknown trace config {type(cfg).__name__}")
