"""What a shipped model costs at inference: parameters and measured milliseconds per 1000 rows."""
from __future__ import annotations

import time

import torch
from torch import nn


def inference_cost(models: list[nn.Module], x: torch.Tensor, precision: str = "auto") -> dict[str, float]:
    """Parameters and measured milliseconds per 1000 rows (best of 3 passes over x)."""
    from recipe.engine.train import predict

    params = sum(sum(p.numel() for p in m.parameters()) for m in models)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for m in models:
            predict(m, x, precision=precision)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"parameters": int(params), "ms_per_1000_rows": round(1000 * min(times) * 1000 / max(len(x), 1), 3)}
