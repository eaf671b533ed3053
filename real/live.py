"""``LiveSource``: the activation source of a real run, filled by the predictor as it runs.

The real backend scores a layer's neurons, keeps the top k, and hands the set to the shared
planner through this source (the planner's ``TracePredictor`` reads it back). Optionally every
set is recorded into a trace file the simulator can replay.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from m2sim.trace.base import ActiveSet
from m2sim.trace.file import TraceWriter


class LiveSource:
    """An ``ActivationSource`` whose sets arrive one (token, layer) at a time."""

    def __init__(self, *, num_layers: int, num_neurons: int, k: int,
                 frequency: Optional[np.ndarray] = None, writer: Optional[TraceWriter] = None):
        self.num_layers = num_layers
        self.num_neurons = num_neurons
        self.neurons_per_id = 1
        self.k = k
        self._frequency = frequency  # (num_layers, num_neurons) from profiling, if known
        self._sets: dict[tuple[int, int], ActiveSet] = {}
        self.writer = writer

    def put(self, token: int, layer: int, scores: np.ndarray) -> ActiveSet:
        """Keep the top ``k`` of a layer's (num_neurons,) scores as the active set."""
        ids = np.argpartition(-scores, self.k - 1)[: self.k].astype(np.int32)
        a = ActiveSet(ids, scores[ids].astype(np.float32))
        self._sets[(token, layer)] = a
        self._sets.pop((token - 2, layer), None)
        if self.writer is not None:
            self.writer.add(token, layer, a.ids, a.scores)
        return a

    def active(self, token: int, layer: int) -> ActiveSet:
        try:
            return self._sets[(token, layer)]
        except KeyError:
            raise ValueError(f"live source: no active set for token {token} layer {layer} yet "
                             f"(real runs cannot look ahead; replay a recorded trace for "
                             f"policies that do)") from None

    def max_active(self, layer: int) -> int:
        return self.k

    def neuron_frequency(self, layer: int) -> np.ndarray:
        if self._frequency is None:
            return np.ones(self.num_neurons)
        return self._frequency[layer]
