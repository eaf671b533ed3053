"""Fitting primitives for the calibration (``m2sim.calibrate``), each tested on synthetic
measurements with known parameters.

Every fit first takes the mean time of the samples at each distinct shape (``means_by_shape``)
and fits those means: a run's time is a sum of its ops' times, so what predicts it is each op's
mean time, slow samples included. Timings on a shared machine are skewed (a sample is slowed,
never sped up); least squares on relative error over the raw samples would weight each by 1/t
and land below even the median (on the development VM such a fit came out 11-21% under every
FFN shape's median in one profile), and the median is itself about 10% under the mean there.

- ``fit_affine``: ``seconds = latency + units * seconds_per_unit``, least squares on relative
  error so small and large sizes both count;
- ``fit_linear``: ``seconds = sum_k coef_k * feature_k``, every coef >= 0 (``nnls``);
- ``fit_ssd``: a batch of ``n`` requests of ``s`` bytes at queue depth ``qd`` takes
  ``ceil(n / min(qd, Q)) * latency + n * s / bandwidth`` (``ssd_batch_s``, the simulator's
  ``ssd_read_s``), with Q the candidate depth of least error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Affine:
    intercept: float  # seconds
    slope: float  # seconds per unit (byte, FLOP, id)
    rel_rms: float  # relative RMS error of the fit over the samples

    def __call__(self, x: float) -> float:
        return self.intercept + self.slope * x


def _rel_rms(pred: np.ndarray, t: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred - t) / t) ** 2)))


def nnls(a: np.ndarray, b: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Nonnegative least squares ``min |W (a x - b)|, x >= 0`` (Lawson-Hanson active set; the
    problems here have a handful of columns)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if weights is not None:
        a, b = a * weights[:, None], b * weights
    # columns at unit norm: features differ by many orders of magnitude (a constant beside
    # weights per op), and the active-set test compares their gradients
    norm = np.linalg.norm(a, axis=0)
    norm[norm == 0] = 1.0
    return _nnls_unit(a / norm, b) / norm


def _nnls_unit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(3 * n + 10):
        grad = a.T @ (b - a @ x)
        free = ~passive & (grad > 1e-12 * max(1.0, np.abs(grad).max()))
        if not free.any():
            break
        passive[np.argmax(np.where(free, grad, -np.inf))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x


def means_by_shape(a: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of the design matrix ``a`` and the mean of ``t`` over each one's
    samples (the module docstring says why the fits use these, not the raw samples)."""
    a, t = np.asarray(a, dtype=float), np.asarray(t, dtype=float)
    shapes, which = np.unique(a, axis=0, return_inverse=True)
    which = which.reshape(-1)
    return shapes, np.bincount(which, weights=t) / np.bincount(which)


def fit_affine(x, t) -> Affine:
    """``t = intercept + slope * x`` with intercept, slope >= 0, minimizing relative error over
    the mean time at each size."""
    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("fit_affine needs at least two distinct sizes")
    a, t = means_by_shape(np.stack([np.ones_like(x), x], axis=1), t)
    c = nnls(a, t, weights=1.0 / t)
    return Affine(float(c[0]), float(c[1]), _rel_rms(a @ c, t))


@dataclass(frozen=True)
class SSDFit:
    latency_s: float  # one request's latency (overlapped queue_depth wide)
    bytes_per_s: float
    queue_depth: int
    rel_rms: float


def ssd_batch_s(num_requests, request_bytes, qd, latency_s, bytes_per_s, queue_depth):
    """The simulator's SSD time of a batch of requests issued ``qd`` at a time."""
    width = np.minimum(np.asarray(qd), queue_depth)
    waves = -(-np.asarray(num_requests) // width)
    return waves * latency_s + np.asarray(num_requests) * np.asarray(request_bytes) / bytes_per_s


def fit_ssd(qd, request_bytes, num_requests, seconds) -> SSDFit:
    """Latency, bandwidth and queue depth Q of ``ssd_batch_s`` from batches of reads measured at
    several queue depths and request sizes (the mean time of each); Q is the candidate with
    the least relative error."""
    shapes, t = means_by_shape(np.stack([qd, request_bytes, num_requests], axis=1), seconds)
    qd, size, n = shapes[:, 0].astype(int), shapes[:, 1], shapes[:, 2].astype(int)
    best: Optional[SSDFit] = None
    for q in sorted({int(v) for v in qd} | {1}):
        waves = -(-n // np.minimum(qd, q))
        a = np.stack([waves, n * size], axis=1).astype(float)
        c = nnls(a, t, weights=1.0 / t)
        if c[1] <= 0:
            continue
        err = _rel_rms(a @ c, t)
        if best is None or err < best.rel_rms * (1 - 1e-6):
            best = SSDFit(float(c[0]), float(1.0 / c[1]), q, err)
    if best is None:
        raise ValueError("fit_ssd: the measurements show no bandwidth term")
    return best


@dataclass(frozen=True)
class LinearFit:
    coef: dict[str, float]  # seconds per unit of each feature
    rel_rms: float


def fit_linear(features: dict[str, np.ndarray], t, *, relative: bool = True) -> LinearFit:
    """``t = sum_k coef_k * feature_k`` with every coef >= 0 (a constant is a feature of ones),
    minimizing relative error (or absolute error: for residuals near zero) over the mean time
    of each distinct row of features."""
    names = list(features)
    a, t = means_by_shape(np.stack([np.asarray(features[k], dtype=float) for k in names],
                                     axis=1), t)
    c = nnls(a, t, weights=1.0 / t if relative else None)
    scale = t if relative else np.full_like(t, max(float(np.abs(t).mean()), 1e-300))
    err = float(np.sqrt(np.mean(((a @ c - t) / scale) ** 2)))
    return LinearFit({k: float(v) for k, v in zip(names, c)}, err)
