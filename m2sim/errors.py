"""Errors a user can cause, each naming the offending field and what is allowed.

The CLI prints ``str(err)`` on one line and exits non-zero; no traceback reaches the user.
"""

from __future__ import annotations

import math


class M2SimError(Exception):
    """Base of the errors the CLI reports as one line."""


class ConfigError(M2SimError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class DoesNotFit(M2SimError):
    """A scenario needs more memory in a tier than it has."""

    def __init__(self, what: str, tier: str, need_bytes: float, have_bytes: float):
        self.need_bytes = need_bytes
        self.have_bytes = have_bytes
        super().__init__(
            f"{what} does not fit in {tier}: needs {format_bytes(need_bytes)}, has "
            f"{format_bytes(have_bytes)} (short by {format_bytes(need_bytes - have_bytes)})"
        )


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``23.25 GiB``, ``512 bytes``)."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} bytes"


def check_range(
    field: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise ConfigError unless ``lo (<|<=) value (<|<=) hi``; ``None`` bounds are unbounded."""
    if value is None:
        if optional:
            return
        raise ConfigError(field, "is required")
    lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
    hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi}"
    allowed = f"allowed: {lo_s}{field.rsplit('.', 1)[-1]}{hi_s}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(field, f"must be finite, got {value} ({allowed})")
    bad = (
        (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
    )
    if bad:
        raise ConfigError(field, f"got {value} ({allowed})")


def check_positive(field: str, value: float | None, *, optional: bool = False) -> None:
    check_range(field, value, 0, None, lo_open=True, optional=optional)


def check_nonneg(field: str, value: float | None, *, optional: bool = False) -> None:
    check_range(field, value, 0, None, optional=optional)


def check_frac(field: str, value: float | None, *, optional: bool = False) -> None:
    check_range(field, value, 0.0, 1.0, optional=optional)
