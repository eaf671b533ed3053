"""Precision bands: rank active neurons by score; the top ``fp16_frac`` run in FP16, the next
``int8_frac`` in INT8, the rest in INT4 (paper §4.3; default 25/25/50, m2cache.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2sim.errors import ConfigError, check_frac
from m2sim.policy.records import EMPTY_IDS, BandedSet
from m2sim.trace.base import ActiveSet
from m2sim.types import BANDS, Precision


@dataclass
class BandsConfig:
    fp16_frac: float = 0.25
    int8_frac: float = 0.25
    int4_frac: float = 0.50

    def __post_init__(self) -> None:
        for name in ("fp16_frac", "int8_frac", "int4_frac"):
            check_frac(f"policy.bands.{name}", getattr(self, name))
        total = self.fp16_frac + self.int8_frac + self.int4_frac
        if abs(total - 1.0) > 1e-6:
            raise ConfigError("policy.bands", f"fp16_frac + int8_frac + int4_frac must be 1, "
                                              f"got {total:g}")

    @property
    def fracs(self) -> tuple[float, float, float]:
        return (self.fp16_frac, self.int8_frac, self.int4_frac)

    @property
    def used(self) -> tuple[Precision, ...]:
        """Precisions that hold any neuron, highest first."""
        return tuple(p for p, f in zip(BANDS, self.fracs) if f > 0)


def band_counts(n: int, fracs: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split ``n`` ranked neurons: cumulative rounding, so counts always sum to ``n``."""
    c1 = int(round(n * fracs[0]))
    c2 = int(round(n * (fracs[0] + fracs[1])))
    c1, c2 = min(c1, n), min(max(c2, c1), n)
    if fracs[2] == 0:
        c2 = n
    if fracs[1] == 0 and fracs[2] == 0:
        c1 = c2 = n
    return (c1, c2 - c1, n - c2)


class ScoreBands:
    """Assigns each active neuron a precision by its score rank."""

    def __init__(self, cfg: BandsConfig):
        self.cfg = cfg
        self.fracs = cfg.fracs

    def assign(self, active: ActiveSet) -> BandedSet:
        n = len(active)
        c = band_counts(n, self.fracs)
        if c[0] == n or c[1] == n or c[2] == n:
            whole = active.ids
            return BandedSet(ids=tuple(whole if ci == n else EMPTY_IDS for ci in c))
        kth = [k for k in (c[0], c[0] + c[1]) if 0 < k < n]
        order = np.argpartition(-active.scores, kth)
        ids = active.ids[order]
        return BandedSet(ids=(ids[: c[0]], ids[c[0]: c[0] + c[1]], ids[c[0] + c[1]:]))

    def unit_bytes(self, n: int, id_bytes: tuple[int, int, int]) -> int:
        """Bytes of ``n`` active ids under this split."""
        return sum(ci * b for ci, b in zip(band_counts(n, self.fracs), id_bytes))
