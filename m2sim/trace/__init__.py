"""Activation traces: per decode token and layer, the predictor's scored set of active FFN neurons.

``ActivationSource`` is what policies read. Two implementations: ``SyntheticTrace`` (a
generator with explicit knobs) and ``RecordedTrace`` (a versioned file, written by the real
backend or by ``write_trace``). Both return ``ActiveSet``s: unique ids with their scores.
"""

from m2sim.trace.base import ActivationSource, ActiveSet, TraceConfig
from m2sim.trace.file import RecordedTrace, TraceHeader, TraceWriter, write_trace
from m2sim.trace.replay import ReplayTraceConfig, build_source
from m2sim.trace.synthetic import SyntheticTrace, SyntheticTraceConfig

__all__ = [
    "ActivationSource",
    "ActiveSet",
    "TraceConfig",
    "SyntheticTrace",
    "SyntheticTraceConfig",
    "RecordedTrace",
    "ReplayTraceConfig",
    "TraceHeader",
    "TraceWriter",
    "write_trace",
    "build_source",
]
