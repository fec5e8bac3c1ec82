"""Tolerances derived from floating-point arithmetic, not from what one CPU happened to produce.

Two computations of the same value that round in a different order (another batch split, a fused
kernel, AVX2 instead of AVX-512, transformers instead of this project) differ by rounding error,
whose size follows from the dtype and the length of the reduction. `eps` is the gap between 1.0
and the next representable number; one rounding to nearest errs by at most eps/2 of the value.
Torch-free, so that the service tests can use it too.
"""

from __future__ import annotations

import math

import numpy as np

FP64_EPS = float(np.finfo(np.float64).eps)  # 2**-52 ≈ 2.2e-16
FP32_EPS = float(np.finfo(np.float32).eps)  # 2**-23 ≈ 1.2e-7
FP16_EPS = float(np.finfo(np.float16).eps)  # 2**-10 ≈ 9.8e-4
BF16_EPS = 2.0**-7  # 8 significant bits ≈ 7.8e-3 (numpy has no bfloat16)


def sum_tolerance(n_terms: int, magnitude: float, eps: float = FP32_EPS) -> float:
    """Largest gap between two sums of `n_terms` terms added in different orders (worst case).

    `magnitude` is the sum of the terms' absolute values (for a mean: the mean absolute term). Each
    order is within (n-1)·(eps/2)·magnitude of the exact sum (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., eq. 4.4), so two orders are within (n-1)·eps·magnitude.
    """
    return max(n_terms - 1, 1) * eps * magnitude


def network_tolerance(layers: int, width: int, magnitude: float, eps: float = FP32_EPS) -> float:
    """Gap between two runs of one network that round differently (kernel, batch shape, library).

    The rounding errors of a dot product over `width` terms add up like a random walk, to about
    sqrt(width)·eps of the activations' size: several standard deviations, as each rounding errs by
    at most eps/2. LayerNorm rescales error and signal alike, so every layer adds that much again.
    `width` is the longest dot product (the feed-forward's intermediate size); `magnitude` is the
    size of the values compared (their largest absolute value).
    """
    return layers * math.sqrt(width) * eps * magnitude


def binomial_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    """`sigmas` standard deviations of the observed rate of an event of probability `p` in `n` trials."""
    return sigmas * math.sqrt(p * (1 - p) / n)
