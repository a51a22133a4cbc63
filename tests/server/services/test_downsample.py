"""LTTB, the downsampling of long metric series."""

from __future__ import annotations

import numpy as np

from deepdock.server.services.downsample import lttb_indices


def test_lttb_keeps_both_ends_and_a_spike():
    x = np.arange(1000)
    y = np.zeros(1000)
    y[517] = 50.0
    kept = lttb_indices(x, y, 50)
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999 and 517 in kept
