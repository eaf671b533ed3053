"""Energy and carbon: operational (power x time x grid intensity) and embodied carbon.

``assess(activity, gpu, host, cfg)`` turns what a run did (``Activity``) into a ``CarbonReport``;
``CarbonConfig`` is the ``carbon`` group's schema (options ``default`` and ``paper_eq1``).
Imports only the standard library, omegaconf (through the hardware configs) and m2sim.errors.
"""

from m2sim.carbon.activity import Activity
from m2sim.carbon.assess import assess
from m2sim.carbon.config import Boundary, CarbonConfig, register_carbon_configs
from m2sim.carbon.report import CarbonReport, Constant

__all__ = ["Activity", "Boundary", "CarbonConfig", "CarbonReport", "Constant", "assess",
           "register_carbon_configs"]
