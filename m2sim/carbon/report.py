"""The result of ``assess``: energy, carbon, its breakdown and every constant that produced it.

Energies are joules, carbon grams CO2e. ``energy_by_component_j`` holds IT energy per component
plus ``facility`` ((PUE - 1) x IT energy), so ``energy_j`` is their sum; the breakdown's
operational part follows the same keys, the embodied part one key per hardware component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True, slots=True, kw_only=True)
class Constant:
    """One number the model used, with its unit and where it came from."""

    name: str
    value: Any
    unit: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "source": self.source}


@dataclass(frozen=True, slots=True, kw_only=True)
class CarbonReport:
    """Energy and carbon of one run (operational + embodied)."""

    energy_j: float  # facility energy: IT energy x PUE
    energy_by_component_j: dict[str, float]  # gpu, cpu, dram, ssd, pcie, facility
    carbon_g: float
    carbon_g_per_token: Optional[float]  # None for a run that produced no token
    breakdown: dict[str, dict[str, float]]  # {"operational": {...}, "embodied": {...}}
    constants_used: dict[str, Constant]

    @property
    def it_energy_j(self) -> float:
        """Energy at the hardware, without the facility overhead (what a meter would read)."""
        return self.energy_j - self.energy_by_component_j.get("facility", 0.0)

    @property
    def operational_g(self) -> float:
        return sum(self.breakdown["operational"].values())

    @property
    def embodied_g(self) -> float:
        return sum(self.breakdown["embodied"].values())

    def to_summary(self) -> dict[str, Any]:
        """The ``summary.json`` fields of the carbon model."""
        return {
            "energy_j": self.energy_j,
            "energy_by_component_j": dict(self.energy_by_component_j),
            "carbon_g": self.carbon_g,
            "carbon_g_per_token": self.carbon_g_per_token,
            "carbon_breakdown_g": {k: dict(v) for k, v in self.breakdown.items()},
            "carbon_constants": {c.name: c.to_dict() for c in self.constants_used.values()},
        }

    def format_constants(self) -> str:
        """Every constant used, one line each: name, value, unit, source."""
        rows = [(c.name, f"{c.value:.6g}" if isinstance(c.value, float) else str(c.value),
                 c.unit, c.source) for c in self.constants_used.values()]
        w0 = max((len(r[0]) for r in rows), default=0)
        w1 = max((len(r[1]) for r in rows), default=0)
        w2 = max((len(r[2]) for r in rows), default=0)
        return "\n".join(f"{n:<{w0}}  {v:>{w1}}  {u:<{w2}}  {s}" for n, v, u, s in rows)
