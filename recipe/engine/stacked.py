"""K runs of one architecture trained as one stacked model (torch.func + vmap), each with its own learning rate,
weight decay, dropout rate, seed and Adam betas, its own early stopping, pruning and health monitors.

This is the engine's `fit` for a stack: each member keeps fit's semantics (batch order from a generator seeded
with its seed, the 1-sample tail batch skipped, val after every epoch, best-epoch restore, on_epoch may raise
Pruned, patience, max_seconds) and ends with a RunResult like fit's. A member that stops (pruned, early-stopped,
non-finite, out of time) leaves the stack at once: its weights go back into its own nn.Module, its result is
handed to `on_finish`, and the stacked parameters and optimizer state are rebuilt without it, so it costs no
more compute. Without dropout a member reproduces `fit` up to float rounding (tests/engine/test_stacked.py).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from recipe import threads
from recipe.engine import train as E
from recipe.engine.batched import why_sequential
from recipe.engine import stacked_health as H
from recipe.engine.monitors import Health
from recipe.engine.stacked_optim import StackedOptimizer

EVAL_ROWS = 8192     # val/train rows per stacked forward (as E.predict)


# Stacking pays while the stacked work of a step stays small: measured on digits MLPs on one CPU thread
# (K = 16 members vs one by one): [16] 4.2x, [64] 3.6x, [128] 2.4x, [256, 256] 0.8x. Work = parameters x batch.
# In recipe tune (scripts/bench_batched.py, MLP [64], 32 trials) K = 32 beat K = 16 by 1.3-1.5x trials/minute.
CPU_MEMBER_WORK = 2e6       # above this per member a CPU stack is no faster than trials one by one
CPU_STACK_WORK = 1.6e7      # the most stacked work per step on a CPU
GPU_STACK_WORK = 2e9        # a GPU has room for far more before a stack stops being launch-bound
MAX_BATCH = {"cpu": 32, "cuda": 32}

def too_big_to_stack(model: nn.Module, batch_size: int, device: torch.device) -> Optional[str]:
    """Why stacking this model would be slower than training its members one by one, or None."""
    work = sum(p.numel() for p in model.parameters()) * batch_size
    if device.type != "cuda" and work > CPU_MEMBER_WORK:
        return f"on CPU a stack is no faster than one by one at {work:.1e} parameters x batch (> {CPU_MEMBER_WORK:.0e})"
    return None


class MemberDropout(nn.Module):
    """Dropout whose rate is a buffer: under vmap each member sees its own p, and draws its own mask."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.zeros(()))

    def forward(self, x):
        if not self.training:
            return x
        keep = torch.rand_like(x) >= self.p            # p = 0 keeps every unit: the output equals x exactly
        return x * keep / (1 - self.p)


@dataclass
class Member:
    """One run in the stack: its own model (weights come back into it), hyperparameters and callbacks."""

    model: nn.Module
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    on_epoch: Optional[Callable[[int, dict], None]] = None      # may raise E.Pruned
    health_thresholds: Optional[dict] = None
    result: E.RunResult = field(default_factory=E.RunResult)


def why_not_stacked(models: list[nn.Module], cfg, device: torch.device) -> Optional[str]:
    """None when these members can share one stack; else the reason (then they train one by one)."""
    reason = why_sequential(_base_module(models), cfg, device)
    if reason:
        return reason
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        return "the members' parameter shapes differ"
    drops = {len(_dropouts(m)) for m in models} - {0}
    if len(drops) > 1:
        return "the members have different dropout layers"
    return None


def _dropouts(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def _base_module(models: list[nn.Module]) -> nn.Module:
    """The architecture: the member with dropout layers if any has them (p = 0 members built none)."""
    return max(models, key=lambda m: len(_dropouts(m)))


def _member_dropout_rates(models: list[nn.Module], layers: int) -> torch.Tensor:
    rates = [[d.p for d in _dropouts(m)] or [0.0] * layers for m in models]
    return torch.tensor(rates, dtype=torch.float32).reshape(len(models), layers)        # (K, layers)


def fit_stacked(members: list[Member], train: E.Tensors, val: E.Tensors, *, task: str, num_classes: int,
                optimizer: str, batch_size: int = 64, epochs: int = 30, precision: str = "auto",
                early_stopping: Optional[dict] = None, max_seconds: Optional[float] = None,
                restore_best: bool = True, monitor_every: int = 50,
                on_finish: Optional[Callable[[Member], None]] = None) -> list[E.RunResult]:
    """Train every member; returns their RunResults in order. `on_finish(member)` runs as each one leaves."""
    from torch.func import functional_call, vmap

    device = train.x.device
    base = copy.deepcopy(_base_module([m.model for m in members]))
    names = [n for n, _ in base.named_parameters()]
    drop_names = []
    for name, module in list(base.named_modules()):
        if isinstance(module, nn.Dropout):
            parent, _, leaf = name.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, leaf, MemberDropout())
            drop_names.append(f"{name}.p")
    base = base.to("meta")
    params = {n: torch.stack([list(m.model.parameters())[i].detach().to(device) for m in members]).requires_grad_()
              for i, n in enumerate(names)}                                                  # name -> (K, ...)
    rates = _member_dropout_rates([m.model for m in members], len(drop_names)).to(device)     # (K, layers)
    buffers = {n: rates[:, i].contiguous() for i, n in enumerate(drop_names)}                 # name -> (K,)
    opt = StackedOptimizer(optimizer, params, [m.lr for m in members], [m.weight_decay for m in members],
                           [m.betas for m in members])

    def call(p, b, x):
        return functional_call(base, (p, b), (x,))

    if _plain_stack(base):     # an MLP: batched matmuls directly, without vmap's per-call dispatch
        forward = lambda p, b, x: _mlp_forward(base, p, b, x.flatten(2), shared=False)  # noqa: E731
        forward_shared = lambda p, b, x: _mlp_forward(base, p, b, x.flatten(1), shared=True)  # noqa: E731
    else:
        forward = vmap(call, in_dims=(0, 0, 0), randomness="different")           # x (K, B, D) -> (K, B, C)
        forward_shared = vmap(call, in_dims=(0, 0, None), randomness="different")  # x (B, D) -> (K, B, C)
    autocast = E._autocast(device, precision)
    metric = (early_stopping or {}).get("metric", "val_loss")
    patience = (early_stopping or {}).get("patience")
    n, bs = len(train), min(batch_size, len(train))
    active = list(members)
    gens = []
    for m in members:
        m.result = E.RunResult()
        g = torch.Generator(device=device)
        g.manual_seed(m.seed)
        gens.append(g)
    health = [Health(m.model, every=monitor_every, thresholds=m.health_thresholds) for m in members]
    state = {id(m): {"best_value": math.inf, "since_best": 0, "best": None, "last_eval": None, "seconds": 0.0,
                     "health": h, "gen": g} for m, h, g in zip(members, health, gens)}
    weights = [i for i, n in enumerate(names) if params[n].ndim >= 3]    # matrices/kernels: Health's _weights
    step = 0

    def run(x, shared: bool):
        with autocast if autocast is not None else contextlib.nullcontext():
            out = (forward_shared if shared else forward)(params, buffers, x)
        out = out.float()
        return out[..., 0] if task == "regression" and out.ndim == 3 else out

    def losses(out, y):   # out (K, B, C) or (K, B); y (K, B) or (B,) -> (K,)
        kk, b = out.shape[:2]
        y = y.expand(kk, b) if y.ndim == 1 else y
        if task == "classification":
            return F.cross_entropy(out.reshape(kk * b, -1), y.reshape(-1), reduction="none").view(kk, b).mean(1)
        return ((out - y) ** 2).mean(1)

    def stacked_predict(x):   # (N, D) -> (K, N, C) in eval mode
        base.eval()
        with torch.no_grad():
            outs = [run(x[i:i + EVAL_ROWS], shared=True) for i in range(0, len(x), EVAL_ROWS)]
        base.train()
        return torch.cat(outs, 1)

    def leave(gone: list[int]) -> None:
        """Members at positions `gone` stop: weights back into their models, results finished, stack shrunk."""
        nonlocal params, buffers
        for j in gone:
            m = active[j]
            _finish(m, {n: params[n][j].detach() for n in names}, state[id(m)], restore_best, train, val, task,
                    num_classes, precision, step)
            if on_finish is not None:
                on_finish(m)
        keep = [j for j in range(len(active)) if j not in gone]
        if not keep:
            active.clear()
            return
        idx = torch.tensor(keep, device=device)
        params = {n: p.detach()[idx].clone().requires_grad_() for n, p in params.items()}
        buffers = {n: b[idx] for n, b in buffers.items()}
        opt.keep(idx, params)
        active[:] = [active[j] for j in keep]

    thread_scope = contextlib.ExitStack()     # threads from the stack's work size, as fit: recipe/threads.py
    if device.type == "cpu":
        macs = threads.macs_per_sample(members[0].model, train.x) * bs * len(members)
        thread_scope.enter_context(threads.using(threads.for_work(macs)))
    try:
        for epoch in range(epochs):
            if not active:
                break
            base.train()
            t0, k = time.perf_counter(), len(active)
            seeds = {m.seed for m in active}
            if len(seeds) == 1:       # one batch order for all: gather each batch once
                perm = torch.randperm(n, generator=state[id(active[0])]["gen"], device=device)
                for m in active[1:]:
                    torch.randperm(n, generator=state[id(m)]["gen"], device=device)   # keep every stream in step
                perms = None
            else:
                perms = torch.stack([torch.randperm(n, generator=state[id(m)]["gen"], device=device)
                                     for m in active])                                         # (K, N)
            epoch_loss = torch.zeros(k, device=device)
            batches, pending, first_step = 0, [], step
            for i in range(0, n, bs):
                if perms is None:
                    idx = perm[i:i + bs]
                    if len(idx) < 2 and batches:
                        continue
                    loss = losses(run(train.x[idx], shared=True), train.y[idx])              # (K,)
                    size = len(idx)
                else:
                    idx = perms[:, i:i + bs]                                                   # (K, B)
                    if idx.shape[1] < 2 and batches:
                        continue
                    loss = losses(run(train.x[idx], shared=False), train.y[idx])
                    size = idx.shape[1]
                if step == 0:
                    first = loss.detach().tolist()
                    for m, v in zip(active, first):
                        m.result.first_loss = v
                opt.zero_grad()
                # members' graphs are independent: a NaN in one member's loss leaves the others' gradients alone
                loss.sum().backward()
                sampled = health[0].sampling(step) and weights
                if sampled:
                    H.activation_stats(params, names, active, state, step,
                                      [train.x[idx] if perms is None else train.x[idx[j]] for j in range(len(active))],
                                      autocast)
                    snapshot = H.grad_stats(params, names, weights, active, state, step)
                opt.step()
                if sampled:
                    H.update_stats(params, names, weights, snapshot, active, state)
                epoch_loss += loss.detach()
                pending.append(loss.detach())
                for m in active:
                    m.result.samples += size
                step += 1
                batches += 1
                if len(pending) >= monitor_every:
                    bad = H.flush_losses(pending, first_step, active, state, params, names)
                    pending, first_step = [], step
                    if bad:    # they leave now, mid-epoch, as fit stops at its flush
                        epoch_loss = epoch_loss[[j for j in range(len(active)) if j not in bad]]
                        if perms is not None:
                            perms = perms[[j for j in range(len(active)) if j not in bad]]
                        leave(bad)
                        if not active:
                            break
            if not active:
                break
            bad = H.flush_losses(pending, first_step, active, state, params, names)
            if bad:
                epoch_loss = epoch_loss[[j for j in range(len(active)) if j not in bad]]
                leave(bad)
                if not active:
                    break
            val_out = stacked_predict(val.x)                                                 # (K, Nval, C)
            share = (time.perf_counter() - t0) / k      # this epoch's wall time, shared by the members
            gone = []
            for j, m in enumerate(active):
                st, r = state[id(m)], m.result
                st["seconds"] += share
                train_loss = float(epoch_loss[j]) / max(batches, 1)
                st["health"].on_epoch_end(train_loss)
                v = E.score_outputs(val_out[j], val.y, task, num_classes)
                st["last_eval"] = v
                row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss, "val_loss": v["loss"],
                       "val_score": v["score"], "seconds": round(st["seconds"], 4)}
                r.history.append(row)
                value = row["val_loss"] if metric == "val_loss" else -row["val_score"]
                if value < st["best_value"] - 1e-9:
                    st["best_value"], st["since_best"], r.best_epoch = value, 0, epoch + 1
                    r.best = {"loss": row["val_loss"], "score": row["val_score"]}
                    if restore_best:
                        st["best"] = {nm: params[nm][j].detach().clone() for nm in names}
                else:
                    st["since_best"] += 1
                try:
                    if m.on_epoch is not None:
                        m.on_epoch(epoch + 1, row)
                except E.Pruned:
                    r.stopped = "pruned"
                    gone.append(j)
                    continue
                if patience is not None and st["since_best"] >= patience:
                    r.stopped = "early_stopping"
                    gone.append(j)
                elif max_seconds is not None and st["seconds"] > max_seconds:
                    r.stopped = "max_seconds"
                    gone.append(j)
            if gone:
                leave(gone)
        if active:
            leave(list(range(len(active))))
    except BaseException:
        for m in active:                # the stack's members in flight get no result; their caller says why
            m.result.stopped = "interrupted"
        raise
    finally:
        thread_scope.close()
    return [m.result for m in members]


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity)


def _plain_stack(base: nn.Module) -> bool:
    """A Sequential of Flatten, Linear, element-wise activations and dropout (recipe's mlp and linear)."""
    return type(base) is nn.Sequential and all(isinstance(m, (nn.Flatten, nn.Linear, MemberDropout) + _ELEMENTWISE)
                                               for m in base)


def _mlp_forward(base: nn.Sequential, params: dict, buffers: dict, x: torch.Tensor, shared: bool) -> torch.Tensor:
    """The stacked MLP: x (B, D) shared by the members, or (K, B, D) one batch each -> (K, B, C)."""
    k = next(iter(params.values())).shape[0]
    for name, m in base.named_children():
        if shared and isinstance(m, MemberDropout):
            x, shared = x.expand(k, *x.shape), False             # each member draws its own mask
        if isinstance(m, nn.Linear):
            w = params[f"{name}.weight"].transpose(1, 2)                                      # (K, D, H)
            b = params.get(f"{name}.bias")
            x = torch.matmul(x, w) if shared else torch.bmm(x, w)                              # (K, B, H)
            shared = False
            if b is not None:
                x = x + b.unsqueeze(1)
        elif isinstance(m, MemberDropout):
            if m.training:
                p = buffers[f"{name}.p"].view(-1, 1, 1)                                        # (K, 1, 1)
                x = x * ((torch.rand_like(x) >= p) / (1 - p))
        elif not isinstance(m, nn.Flatten):
            x = m(x)
    return x


def _finish(m: Member, current: dict[str, torch.Tensor], st: dict, restore_best: bool, train: E.Tensors,
            val: E.Tensors, task: str, num_classes: int, precision: str, step: int) -> None:
    """fit's ending for one member: restore the best epoch, load the weights, evaluate, health checks."""
    r = m.result
    restored = restore_best and st["best"] is not None and r.stopped != "non_finite" and \
        r.best_epoch != len(r.history)
    weights = st["best"] if restored else current
    with torch.no_grad():
        for p, name in zip(m.model.parameters(), weights):
            p.copy_(weights[name].to(p.device, p.dtype))
    r.steps, r.seconds = step, st["seconds"]
    if r.stopped != "non_finite":
        last = st["last_eval"]
        r.best = dict(last) if (last is not None and not restored and r.stopped != "pruned") else \
            E.evaluate(m.model, val, task, num_classes, precision=precision)
        r.final_train = E.evaluate(m.model, train, task, num_classes, precision=precision)
    r.health = st["health"].checks()


def fit_stacked_from_configs(models: list[nn.Module], cfgs: list, ds, train: E.Tensors, val: E.Tensors,
                             on_epoch: Optional[list] = None, on_finish=None) -> list[E.RunResult]:
    """fit_stacked with each member's experiment config (as E.fit_from_config): lr, weight decay and seed per
    member; the rest (optimizer, batch size, epochs, early stopping, precision) is shared and taken from the first."""
    t = cfgs[0].train
    members = [Member(model=m, lr=c.train.lr, weight_decay=c.train.weight_decay, seed=c.seed,
                      on_epoch=(on_epoch or [None] * len(models))[i], health_thresholds=c.checks)
               for i, (m, c) in enumerate(zip(models, cfgs))]
    return fit_stacked(members, train, val, task=ds.task, num_classes=ds.num_classes, optimizer=t.optimizer,
                       batch_size=t.batch_size, epochs=t.epochs, precision=t.precision,
                       early_stopping=t.early_stopping.model_dump() if t.early_stopping else None,
                       max_seconds=t.max_seconds, restore_best=t.early_stopping is not None,
                       on_finish=on_finish)


def stack_key(cfg) -> str:
    """What members of one stack must share: the config without lr, weight decay, dropout rate and seed."""
    from recipe.config import digest_json

    raw: dict[str, Any] = cfg.model_dump(mode="json")
    raw.pop("seed", None)
    for section, key in (("train", "lr"), ("train", "weight_decay"), ("model", "dropout")):
        raw[section].pop(key, None)
    return digest_json(raw)
