"""Placeholder schema of the ``carbon`` group until the carbon model lands (issue 3)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CarbonConfig:
    """Base of the ``carbon`` group."""
