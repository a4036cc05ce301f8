"""Engine throughput vs a minimal hand-written PyTorch loop, same model, same data, one process.

    python scripts/bench_engine.py [--device cpu|cuda] [--rows 20000] [--epochs 5] [--repeats 3]

Both loops keep the data on the device and batch by index; the engine adds what recipe promises
(health monitors, per-epoch whole-split evaluation, early-stopping bookkeeping, metrics). The ratio is
engine samples/s over hand-loop samples/s (median of interleaved repeats); >= 0.95 is the target.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from recipe.engine.train import Tensors, fit, seed_everything


def make_model(d: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, k))


def hand_loop(model, x, y, xv, yv, epochs, bs, lr, precision_ctx) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    n = len(x)
    gen = torch.Generator(device=x.device).manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen, device=x.device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            with precision_ctx():
                loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), precision_ctx():   # a fair hand loop evaluates val each epoch too
            float(loss_fn(model(xv).float(), yv))
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * n / (time.perf_counter() - start)


def engine_loop(model, x, y, xv, yv, epochs, bs, lr, monitor_every=50) -> float:
    start = time.perf_counter()
    r = fit(model, Tensors(x, y), Tensors(xv, yv), task="classification", num_classes=int(y.max()) + 1,
            optimizer="adam", lr=lr, batch_size=bs, epochs=epochs, seed=0, restore_best=False, eval_train=False,
            monitor_every=monitor_every)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return r.samples / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=6)
    a = ap.parse_args()
    dev = torch.device(a.device)
    seed_everything(0)
    x = torch.randn(a.rows, a.features, device=dev)
    y = (x[:, :a.classes].argmax(1)).to(dev)
    xv, yv = x[: a.rows // 5].clone(), y[: a.rows // 5].clone()
    if dev.type == "cuda":   # the engine's default on CUDA is bf16 autocast: give the hand loop the same
        ctx = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        import contextlib

        ctx = contextlib.nullcontext
    runs = {
        "hand": lambda: hand_loop(make_model(a.features, a.classes).to(dev), x, y, xv, yv, a.epochs, a.batch, 1e-3, ctx),
        "engine": lambda: engine_loop(make_model(a.features, a.classes).to(dev), x, y, xv, yv, a.epochs, a.batch, 1e-3),
        # health monitors sampled so rarely they never run: their cost is the difference
        "quiet": lambda: engine_loop(make_model(a.features, a.classes).to(dev), x, y, xv, yv, a.epochs, a.batch, 1e-3,
                                     monitor_every=10**9),
    }
    results: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(a.repeats + 1):      # first round is warm-up; the order rotates so no loop always goes first
        for name in order[r % 3:] + order[:r % 3]:
            torch.manual_seed(0)
            speed = runs[name]()
            if r:
                results[name].append(speed)
    hand, eng, quiet = results["hand"], results["engine"], results["quiet"]
    h, e, q = statistics.median(hand), statistics.median(eng), statistics.median(quiet)
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, {a.rows} rows x {a.features}, MLP 256-256, batch {a.batch}, {a.epochs} epochs")
    print(f"hand-written loop : {h:12,.0f} samples/s")
    print(f"recipe engine     : {e:12,.0f} samples/s")
    print(f"engine, monitors off: {q:10,.0f} samples/s")
    print(f"ratio engine/hand : {e / h:.3f}")
    print(f"health monitor cost: {1 - e / q:+.1%} of throughput (NaN check every 50 steps; gradients, "
          f"updates and activations at steps 0, 1, 10 and every 200)")


if __name__ == "__main__":
    main()
