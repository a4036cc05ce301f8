"""Learning-rate range test (Smith 2015; fast.ai's lr_find): raise the LR exponentially for a few hundred
steps, watch the smoothed loss, recommend a rate a decade below where the loss bottoms out."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from recipe import tasks
from recipe.engine.hardware import _autocast, _note, resolve_precision
from recipe.engine.train import Tensors, check_output, loss_fn, make_optimizer, seed_everything


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)      # smoothed
    recommended: float = float("nan")
    min_loss_lr: float = float("nan")
    stopped: str = "completed"


def lr_range_test(model, train: Tensors, *, task: str, num_classes: int, optimizer: str, batch_size: int,
                  seed: int, start: float = 1e-6, end: float = 1.0, steps: int = 120, beta: float = 0.9,
                  precision: str = "auto") -> RangeTest:
    """Trains `model` in place (pass a throwaway copy), under the precision the real runs use."""
    seed_everything(seed)
    device = train.x.device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), start, 0.0)
    compute, outputs = loss_fn(task), tasks.get(task).num_outputs(num_classes)
    used, note = resolve_precision(device, precision)
    _note(note)
    ac = _autocast(device, used)
    scaler = torch.amp.GradScaler(device.type) if used == "fp16" else None
    n, bs = len(train), min(batch_size, len(train))
    factor = (end / start) ** (1 / max(steps - 1, 1))
    out = RangeTest()
    avg, best = 0.0, math.inf
    model.train()
    perm = torch.randperm(n, generator=gen, device=device)
    pos = 0
    losses = []
    for step in range(steps):
        lr = start * factor ** step
        for g in opt.param_groups:
            g["lr"] = lr
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen, device=device), 0
        idx = perm[pos:pos + bs]
        pos += bs
        with ac if ac is not None else contextlib.nullcontext():
            o = model(train.x[idx])
        o = check_output(o, len(idx), task, outputs)
        loss = compute(o.float(), train.y[idx])       # float32 loss, as in fit
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        losses.append(loss.detach())
        if len(losses) == 20 or step == steps - 1:       # sync in chunks
            for v in torch.stack(losses).float().cpu().tolist():
                k = len(out.losses) + 1
                raw = v if math.isfinite(v) else math.inf
                avg = beta * avg + (1 - beta) * raw
                smooth = avg / (1 - beta ** k)
                out.lrs.append(start * factor ** (k - 1))
                out.losses.append(smooth)
                if smooth < best:
                    best = smooth
            losses = []
            if not math.isfinite(out.losses[-1]) or out.losses[-1] > 4 * best:
                out.stopped = "diverged"
                break
    finite = [(l, lr) for l, lr in zip(out.losses, out.lrs) if math.isfinite(l)]
    if finite:
        _, out.min_loss_lr = min(finite)
        out.recommended = out.min_loss_lr / 10
    return out
