"""Closed sets shared by every layer of m2sim: precisions, memory tiers, links.

Enums are validated by name in YAML (``precision: INT8``) and used as dictionary keys in
results, so their ``.name`` is part of the output schema (``bytes_by_link["SSD_TO_DRAM"]``).
"""

from __future__ import annotations

from enum import Enum


class Precision(Enum):
    """Storage precision of a weight (weight-only quantization; activations stay 16-bit)."""

    FP16 = 16
    INT8 = 8
    INT4 = 4

    @property
    def bits(self) -> int:
        return self.value


# Band order used everywhere a per-precision array appears: index 0 is the highest precision.
BANDS: tuple[Precision, ...] = (Precision.FP16, Precision.INT8, Precision.INT4)


class Tier(Enum):
    """Memory tiers, fastest first."""

    HBM = "hbm"
    DRAM = "dram"
    SSD = "ssd"


class Link(Enum):
    """One-way copy paths between tiers that the simulator charges time on."""

    SSD_TO_DRAM = "ssd_to_dram"
    DRAM_TO_HBM = "dram_to_hbm"


class Device(Enum):
    """Where a computation runs."""

    GPU = "gpu"
    CPU = "cpu"
