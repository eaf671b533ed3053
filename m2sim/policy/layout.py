"""``NeuronLayout``: the sizes policies need, fixed for a run (no model or hardware types)."""

from __future__ import annotations

from dataclasses import dataclass

from m2sim.policy.bands import band_counts


@dataclass(frozen=True, slots=True, kw_only=True)
class NeuronLayout:
    num_layers: int
    num_ids: int  # ids per layer (neurons, or clusters of neurons_per_id)
    neurons_per_id: int
    id_bytes: tuple[int, int, int]  # bytes of one id per band (FP16, INT8, INT4)
    max_active: tuple[int, ...]  # per layer: the largest active set the predictor returns
    fracs: tuple[float, float, float]  # precision bands of the active set

    def active_unit_bytes(self, layer: int) -> int:
        """Bytes of the largest active set of ``layer`` under the band split (an ATU unit)."""
        c = band_counts(self.max_active[layer], self.fracs)
        return sum(ci * b for ci, b in zip(c, self.id_bytes))

    def total_active_unit_bytes(self) -> int:
        return sum(self.active_unit_bytes(layer) for layer in range(self.num_layers))
