"""The record every activation source returns, and the protocol sources implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class ActiveSet:
    """Active FFN neurons of one (token, layer) and the predictor's score for each.

    Order carries no meaning; precision policies rank by score themselves.
    """

    ids: np.ndarray  # (k,) int32, unique
    scores: np.ndarray  # (k,) float32

    def __len__(self) -> int:
        return len(self.ids)


class ActivationSource(Protocol):
    """Scored active sets per decode token and layer (tokens count from 0 at the first decode)."""

    num_layers: int
    num_neurons: int

    def active(self, token: int, layer: int) -> ActiveSet: ...

    def max_active(self, layer: int) -> int:
        """Largest active set this source can return for ``layer`` (sizes cache units)."""
        ...

    def neuron_frequency(self, layer: int) -> np.ndarray:
        """(num_neurons,) fraction of tokens each neuron is active (offline profiling)."""
        ...


@dataclass
class TraceConfig:
    """Base of the ``trace`` config group."""
