"""Largest-Triangle-Three-Buckets (Steinarsson, 2013): the downsampling charting libraries use, because
it keeps the shape a person sees (peaks, dips) where taking every k-th point or averaging flattens it.

The first and last points are kept; the rest is cut into ``n - 2`` buckets and each keeps the point
forming the largest triangle with the point kept before it and the mean of the next bucket. Vectorised
per bucket with numpy: 100,000 → 1,000 points in a few milliseconds.
"""

from __future__ import annotations

import numpy as np


def lttb_indices(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` points of (x, y) that LTTB keeps; all of them when ``n >= len``."""
    size = len(x)
    if n >= size or size <= 2:
        return np.arange(size)
    if n < 3:
        return np.array([0, size - 1])[:n] if n > 0 else np.array([], dtype=int)
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    edges = np.linspace(1, size - 1, n - 1).astype(np.int64)  # n-2 buckets over the inner points
    keep = np.empty(n, dtype=np.int64)
    keep[0], keep[-1] = 0, size - 1
    previous = 0
    for b in range(n - 2):
        start, stop = edges[b], max(edges[b + 1], edges[b] + 1)
        if b + 2 < len(edges):
            nstart, nstop = edges[b + 1], max(edges[b + 2], edges[b + 1] + 1)
            mean_x, mean_y = x[nstart:nstop].mean(), y[nstart:nstop].mean()
        else:
            mean_x, mean_y = x[-1], y[-1]
        px, py = x[previous], y[previous]
        area = np.abs((px - mean_x) * (y[start:stop] - py) - (px - x[start:stop]) * (mean_y - py))
        previous = start + int(np.argmax(area))
        keep[b + 1] = previous
    return keep

