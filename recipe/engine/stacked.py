"""K runs of one architecture trained as one stacked model (torch.func + vmap), each with its own learning rate,
weight decay, dropout rate, seed and Adam betas, its own early stopping, pruning and health monitors.

This is the engine's `fit` for a stack: the epochs run in fit's own epoch loop (recipe/engine/loop.py, with the
Stack strategy below), so each member keeps fit's semantics (batch order from a generator seeded with its seed,
the 1-sample tail batch skipped, val after every epoch, best-epoch restore, on_epoch may raise Pruned, patience,
max_seconds, its own metrics.jsonl and TensorBoard events) and ends with a RunResult like fit's. A member that stops (pruned, early-stopped,
non-finite, out of time) leaves the stack at once: its weights go back into its own nn.Module, its result is
handed to `on_finish`, and the stacked parameters and optimizer state are rebuilt without it, so it costs no
more compute. Without dropout a member reproduces `fit` up to float rounding (tests/engine/test_stacked.py).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from recipe import tasks, threads
from recipe.engine import loop
from recipe.engine import train as E
from recipe.engine.batched import why_sequential
from recipe.engine import stacked_health as H
from recipe.engine.monitors import Health
from recipe.engine.runlog import RunLog
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
    metrics_path: Optional[Path] = None                         # its curve (metrics.jsonl), as fit's metrics_path
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
    """Train every member; returns their RunResults in order. `on_finish(member)` runs as each one leaves.
    The epochs run in the engine's one epoch loop (recipe/engine/loop.py), as fit's do."""
    device = train.x.device
    runs = []
    for m in members:
        g = torch.Generator(device=device)
        g.manual_seed(m.seed)
        log = RunLog(m.metrics_path)
        m.result = E.RunResult()
        runs.append(loop.Run(result=m.result, log=log, model=m.model, on_epoch=m.on_epoch, gen=g, seed=m.seed,
                             health=Health(m.model, every=monitor_every, thresholds=m.health_thresholds,
                                           on_flush=log.step),
                             on_finish=(lambda m=m: on_finish(m)) if on_finish is not None else None))
    try:
        stack = Stack(members, runs, train, val, task=task, num_classes=num_classes, optimizer=optimizer,
                      batch_size=batch_size, precision=precision, monitor_every=monitor_every)
    except BaseException:
        for run in runs:
            run.log.close()
        raise
    thread_scope = contextlib.ExitStack()     # threads from the stack's work size, as fit: recipe/threads.py
    if device.type == "cpu":
        macs = threads.macs_per_sample(members[0].model, train.x) * stack.bs * len(members)
        thread_scope.enter_context(threads.using(threads.for_work(macs)))
    with thread_scope:
        loop.run_epochs(stack, epochs=epochs, early_stopping=early_stopping, max_seconds=max_seconds,
                        restore_best=restore_best)
    return [m.result for m in members]


class Stack:
    """The one loop's strategy for K members (loop.Strategy): stacked parameters, one optimizer step for all, and
    a stack that shrinks as members leave."""

    def __init__(self, members: list[Member], runs: list, train: E.Tensors, val: E.Tensors, *, task: str,
                 num_classes: int, optimizer: str, batch_size: int, precision: str, monitor_every: int):
        from torch.func import functional_call, vmap

        device = train.x.device
        self.active, self.step, self.task, self.t = list(runs), 0, task, tasks.get(task)
        self.train, self.val, self.num_classes, self.precision = train, val, num_classes, precision
        self.monitor_every, self.device = monitor_every, device
        self.n, self.bs = len(train), min(batch_size, len(train))
        base = copy.deepcopy(_base_module([m.model for m in members]))
        self.names = names = [n for n, _ in base.named_parameters()]
        drop_names = []
        for name, module in list(base.named_modules()):
            if isinstance(module, nn.Dropout):
                parent, _, leaf = name.rpartition(".")
                setattr(base.get_submodule(parent) if parent else base, leaf, MemberDropout())
                drop_names.append(f"{name}.p")
        self.base = base = base.to("meta")
        self.params = {n: torch.stack([list(m.model.parameters())[i].detach().to(device) for m in members])
                       .requires_grad_() for i, n in enumerate(names)}                             # name -> (K, ...)
        rates = _member_dropout_rates([m.model for m in members], len(drop_names)).to(device)     # (K, layers)
        self.buffers = {n: rates[:, i].contiguous() for i, n in enumerate(drop_names)}             # name -> (K,)
        self.opt = StackedOptimizer(optimizer, self.params, [m.lr for m in members],
                                    [m.weight_decay for m in members], [m.betas for m in members])

        def call(p, b, x):
            return functional_call(base, (p, b), (x,))

        if _plain_stack(base):     # an MLP: batched matmuls directly, without vmap's per-call dispatch
            self.forward = lambda p, b, x: _mlp_forward(base, p, b, x.flatten(2), shared=False)  # noqa: E731
            self.forward_shared = lambda p, b, x: _mlp_forward(base, p, b, x.flatten(1), shared=True)  # noqa: E731
        else:
            self.forward = vmap(call, in_dims=(0, 0, 0), randomness="different")           # (K, B, D) -> (K, B, C)
            self.forward_shared = vmap(call, in_dims=(0, 0, None), randomness="different")  # (B, D) -> (K, B, C)
        self.autocast = E._autocast(device, precision)
        self.weights = [i for i, n in enumerate(names) if self.params[n].ndim >= 3]   # matrices: Health's _weights

    def _run(self, x, shared: bool):
        with self.autocast if self.autocast is not None else contextlib.nullcontext():
            out = (self.forward_shared if shared else self.forward)(self.params, self.buffers, x)
        out = out.float()
        return self.t.flat_members(out)         # (K, B, 1) -> (K, B) for one output per row

    def _losses(self, out, y):   # out (K, B, C) or (K, B); y (K, B) or (B,) -> (K,)
        kk, b = out.shape[:2]
        y = y.expand(kk, b) if y.ndim == 1 else y
        return self.t.unreduced_loss(out.reshape(kk * b, *out.shape[2:]), y.reshape(-1)).view(kk, b).mean(1)

    def train_epoch(self, epoch: int, leave) -> list[float]:
        train, n, bs, device, active = self.train, self.n, self.bs, self.device, self.active
        self.base.train()
        k = len(active)
        if len({r.seed for r in active}) == 1:       # one batch order for all: gather each batch once
            perm = torch.randperm(n, generator=active[0].gen, device=device)
            for r in active[1:]:
                torch.randperm(n, generator=r.gen, device=device)   # keep every stream in step
            perms = None
        else:
            perms = torch.stack([torch.randperm(n, generator=r.gen, device=device) for r in active])     # (K, N)
        epoch_loss = torch.zeros(k, device=device)
        batches, pending, first_step = 0, [], self.step

        def drop(bad: list[int]) -> None:   # they leave now, mid-epoch, as fit stops at its flush
            nonlocal epoch_loss, perms
            keep = [j for j in range(len(self.active)) if j not in bad]
            epoch_loss = epoch_loss[keep]
            if perms is not None:
                perms = perms[keep]
            leave(bad)

        for i in range(0, n, bs):
            if perms is None:
                idx = perm[i:i + bs]
                if len(idx) < 2 and batches:
                    continue
                loss = self._losses(self._run(train.x[idx], shared=True), train.y[idx])              # (K,)
                size = len(idx)
            else:
                idx = perms[:, i:i + bs]                                                             # (K, B)
                if idx.shape[1] < 2 and batches:
                    continue
                loss = self._losses(self._run(train.x[idx], shared=False), train.y[idx])
                size = idx.shape[1]
            if self.step == 0:
                for r, v in zip(self.active, loss.detach().tolist()):
                    r.result.first_loss = v
            self.opt.zero_grad()
            # members' graphs are independent: a NaN in one member's loss leaves the others' gradients alone
            loss.sum().backward()
            sampled = self.active[0].health.sampling(self.step) and self.weights
            if sampled:
                H.activation_stats(self.params, self.names, self.active, self.step,
                                   [train.x[idx] if perms is None else train.x[idx[j]] for j in range(len(self.active))],
                                   self.autocast)
                snapshot = H.grad_stats(self.params, self.names, self.weights, self.active, self.step)
            self.opt.step()
            if sampled:
                H.update_stats(self.params, self.names, self.weights, snapshot, self.active)
            epoch_loss += loss.detach()
            pending.append(loss.detach())
            for r in self.active:
                r.result.samples += size
            self.step += 1
            batches += 1
            if len(pending) >= self.monitor_every:
                bad = H.flush_losses(pending, first_step, self.active, self.params, self.names)
                pending, first_step = [], self.step
                if bad:
                    drop(bad)
                    if not self.active:
                        return []
        bad = H.flush_losses(pending, first_step, self.active, self.params, self.names)
        if bad:
            drop(bad)
        return [float(v) / max(batches, 1) for v in epoch_loss]

    def evaluate(self) -> list[dict]:
        x = self.val.x
        self.base.eval()
        with torch.no_grad():
            out = torch.cat([self._run(x[i:i + EVAL_ROWS], shared=True) for i in range(0, len(x), EVAL_ROWS)], 1)
        self.base.train()                                                                       # (K, Nval, C)
        return [E.score_outputs(out[j], self.val.y, self.task, self.num_classes) for j in range(len(self.active))]

    def snapshot(self, j: int) -> dict[str, torch.Tensor]:
        return {nm: self.params[nm][j].detach().clone() for nm in self.names}

    def release(self, positions: list[int]) -> list[dict[str, torch.Tensor]]:
        """Their current weights (views into the old stack); the stack, its optimizer state shrink without them."""
        current = [{n: self.params[n][j].detach() for n in self.names} for j in positions]
        keep = [j for j in range(len(self.active)) if j not in positions]
        if keep:
            idx = torch.tensor(keep, device=self.device)
            self.params = {n: p.detach()[idx].clone().requires_grad_() for n, p in self.params.items()}
            self.buffers = {n: b[idx] for n, b in self.buffers.items()}
            self.opt.keep(idx, self.params)
        self.active = [self.active[j] for j in keep]
        return current

    def load(self, run, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for p, name in zip(run.model.parameters(), weights):
                p.copy_(weights[name].to(p.device, p.dtype))

    def evaluate_run(self, run, split: str) -> dict:
        return E.evaluate(run.model, self.train if split == "train" else self.val, self.task, self.num_classes,
                          precision=self.precision)


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


def fit_stacked_from_configs(models: list[nn.Module], cfgs: list, ds, train: E.Tensors, val: E.Tensors,
                             on_epoch: Optional[list] = None, on_finish=None,
                             metrics_paths: Optional[list] = None) -> list[E.RunResult]:
    """fit_stacked with each member's experiment config (as E.fit_from_config): lr, weight decay and seed per
    member; the rest (optimizer, batch size, epochs, early stopping, precision) is shared and taken from the first."""
    t = cfgs[0].train
    members = [Member(model=m, lr=c.train.lr, weight_decay=c.train.weight_decay, seed=c.seed,
                      on_epoch=(on_epoch or [None] * len(models))[i], health_thresholds=c.checks,
                      metrics_path=(metrics_paths or [None] * len(models))[i])
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
