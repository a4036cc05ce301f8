"""train.devices parity and time: one run in 1 process vs the same run across N DDP ranks, in one script run.

    python scripts/bench_ddp.py [--devices 2] [--epochs 10] [--hidden 256 256] [--optimizer adam] [--device cpu]

Same data (digits), model, seed, global batch and batch order; the N-rank run averages its shares' gradients
(DDP, gloo on CPU, NCCL on CUDA), so its final loss equals one process's up to float summation order. Printed per
run: final train and val loss, val accuracy, wall seconds, loop seconds (rank 0's training and evaluation) and
the rest (starting the child ranks, which import torch, and joining them), then the parity (|relative
difference| of the losses, largest weight difference) and the wall-time ratio.

On a 2-core CPU a speed-up is not expected: the two ranks split the same two cores one process would use
(one thread each, recipe/threads.py), the gradients cross loopback every step, and a child rank's start costs
seconds. DDP pays off with one GPU (or one machine's cores) per rank on models whose steps dwarf that.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from recipe import threads
from recipe.config import validate
from recipe.data import load
from recipe.engine import train as E
from recipe.models import create


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    threads.configure_env()
    cfg = validate({"name": "bench-ddp", "seed": 0, "data": {"source": "builtin:digits"},
                    "model": {"kind": "mlp", "hidden": a.hidden},
                    "train": {"optimizer": a.optimizer, "lr": a.lr, "epochs": a.epochs, "batch_size": a.batch_size}})
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = E.pick_device(a.device)
    tr, va = E.to_tensors(ds, ds.train, device), E.to_tensors(ds, ds.val, device)
    print(f"digits: {len(tr)} train / {len(va)} val rows, mlp {a.hidden}, {a.optimizer} lr {a.lr}, batch "
          f"{a.batch_size}, {a.epochs} epochs, {device}; {threads.usable_cores()} usable cores; "
          f"load before: {open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else '?'}")
    # warm-up: the first optimizer step imports torch._dynamo (as the stages do before they train)
    E.fit_from_config(create(cfg, ds, cfg.seed).to(device), tr, va, cfg.with_overrides({"train.epochs": 1}), ds,
                      devices=1)
    rows = {}
    for devices in (1, a.devices):
        model = create(cfg, ds, cfg.seed).to(device)
        t0 = time.perf_counter()
        r = E.fit_from_config(model, tr, va, cfg, ds, devices=devices)
        wall = time.perf_counter() - t0
        rows[devices] = (r, model, wall)
        print(f"{devices} process{'es' if devices > 1 else '  '}: final train loss {r.history[-1]['train_loss']:.7f}  "
              f"val loss {r.history[-1]['val_loss']:.7f}  val acc {r.history[-1]['val_score']:.4f}  "
              f"wall {wall:6.2f}s  loop {r.seconds:6.2f}s  start+join {wall - r.seconds:5.2f}s"
              + (f"  samples per rank {r.rank_samples}" if devices > 1 else ""))
    (r1, m1, w1), (rn, mn, wn) = rows[1], rows[a.devices]
    rel = {k: abs(r1.history[-1][k] - rn.history[-1][k]) / abs(r1.history[-1][k]) for k in ("train_loss", "val_loss")}
    weights = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(m1.parameters(), mn.parameters()))
    print(f"parity: |rel diff| train loss {rel['train_loss']:.2e}, val loss {rel['val_loss']:.2e}; "
          f"largest weight difference {weights:.2e}")
    print(f"wall time {a.devices} ranks / 1 process: {wn / w1:.2f}x  (loop only: {rn.seconds / r1.seconds:.2f}x); "
          f"load after: {open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else '?'}")


if __name__ == "__main__":
    main()
