"""Predictor: which FFN neurons are active for a (token, layer).

``TracePredictor`` replays an activation source: the trace holds what the predictor emitted
(scored ids). With sparsity off every neuron is active (dense FFN), with equal scores.
"""

from __future__ import annotations

import numpy as np

from m2sim.trace.base import ActivationSource, ActiveSet


class TracePredictor:
    """Active sets from an activation source (sparse) or all neurons (dense)."""

    def __init__(self, source: ActivationSource, *, sparse: bool):
        self.source = source
        self.sparse = sparse
        n = source.num_neurons
        self._dense = ActiveSet(np.arange(n, dtype=np.int32), np.zeros(n, dtype=np.float32))

    def predict(self, token: int, layer: int) -> ActiveSet:
        if not self.sparse:
            return self._dense
        return self.source.active(token, layer)

    def max_active(self, layer: int) -> int:
        return self.source.max_active(layer) if self.sparse else self.source.num_neurons
