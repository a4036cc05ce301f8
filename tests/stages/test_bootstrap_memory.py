"""Bootstrap intervals are drawn in chunks: the same numbers as one big resample, a bounded memory peak."""
from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from recipe.stages.ensemble import stats as ens    # where the bootstrap lives (BOOTSTRAP_CHUNK is read there)


def test_chunks_give_the_same_interval_as_one_resample(monkeypatch):
    rng = np.random.default_rng(0)
    delta = rng.normal(0.01, 0.1, 300)
    idx = np.random.default_rng(7).integers(0, 300, (ens.BOOTSTRAP, 300))       # the unchunked draw
    lo, hi = np.percentile(delta[idx].mean(1), [2.5, 97.5])
    monkeypatch.setattr(ens, "BOOTSTRAP_CHUNK", 1000)                            # 3 resamples per chunk
    mean, clo, chi = ens.paired_bootstrap(delta, 7)
    assert (clo, chi) == (float(lo), float(hi)) and mean == float(delta.mean())


def test_bootstrap_of_many_rows_stays_small():
    n = 100_000        # one (1000, n) index array would be 800 MB, and the gathered values as much again
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    out = torch.randn(n, 3, generator=g) + 2 * torch.nn.functional.one_hot(y, 3)
    tracemalloc.start()
    lo, hi = ens.bootstrap_score(out, y, "classification", 0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    acc = float((out.argmax(1) == y).float().mean())
    assert lo < acc < hi and hi - lo < 0.01
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MB"
