"""The one training loop (DESIGN §6): device-resident data batched by index, seeds, early stopping,
max_seconds, whole-split evaluation, metrics.jsonl, atomic checkpoints, bf16/fp16 autocast with a float32 loss."""
from __future__ import annotations

import contextlib
import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from recipe import tasks, threads
# pick_device, deterministic and resolve_precision are part of the engine's API (E.pick_device, ...)
from recipe.engine.hardware import (_autocast, _is_oom, _note, deterministic, eval_batch_size,  # noqa: F401
                                    pick_device, resolve_precision)
from recipe.engine import loop
from recipe.engine.loop import Pruned, RunResult  # noqa: F401  (part of the engine's API: E.Pruned, E.RunResult)
from recipe.engine.monitors import Health, NonFiniteLoss
from recipe.engine.runlog import RunLog
from recipe.engine.schedule import Schedule, from_config as schedule_from_config
from recipe.errors import RecipeError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Tensors:
    """One split on the device: normalized inputs (N, D) and targets (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx) -> "Tensors":
        idx = torch.as_tensor(idx, device=self.x.device)
        return Tensors(self.x[idx], self.y[idx])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def sample(self, rows: int = 2) -> torch.Tensor:
        return self.x[:rows]

    def batches(self, batch_size: int, gen: torch.Generator, share=None):
        """One epoch of (x, y, rows) batches by a random permutation of the rows (a streamed split reads them from
        disk instead: recipe/engine/streamed.py); a 1-sample tail batch is skipped (it breaks BatchNorm). `share`
        (DDP, recipe/engine/distributed.py) maps a global batch's indices to this rank's, or None (none of it);
        `rows` is the global batch's size."""
        perm = torch.randperm(len(self), generator=gen, device=self.x.device)
        for i in range(0, len(self), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2 and i:
                continue
            mine = idx if share is None else share(idx)
            if mine is None:
                continue
            yield self.x[mine], self.y[mine], len(idx)


def to_tensors(ds, split, device: torch.device) -> Tensors:
    x = torch.from_numpy(np.ascontiguousarray(ds.normalize(split.x))).to(device)
    y = torch.from_numpy(np.ascontiguousarray(ds.target(split.y))).to(device)
    return Tensors(x, y)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise RecipeError(f"train.optimizer: unknown optimizer '{name}'")


def loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return tasks.get(task).loss


def check_output(out: torch.Tensor, batch: int, task: str, num_outputs: int) -> torch.Tensor:
    """Validate the model's output shape once (the task says what it must be); regression (B, 1) becomes (B,)."""
    return tasks.get(task).shape_output(out, batch, num_outputs)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: Optional[int] = None, train_mode: bool = False,
            precision: str = "auto") -> torch.Tensor:
    """Model outputs for every row of x, in float32, in chunks that fit in memory (eval_batch_size)."""
    was = model.training
    try:
        model.eval()            # the CUDA memory probe must not touch BatchNorm statistics or the dropout stream
        batch = batch or eval_batch_size(model, x, precision)
        model.train(train_mode)
        while True:
            try:
                outs, i = [], 0
                for i in range(0, len(x), batch):
                    ac = _autocast(x.device, precision)
                    with ac if ac is not None else contextlib.nullcontext():
                        outs.append(model(x[i:i + batch]).float())
                break
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e) or batch <= 1:
                    raise
                outs = []
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
                batch = max(1, batch // 2)
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.zeros(0, device=x.device)

def score_outputs(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int = 0) -> dict[str, Any]:
    """Loss, score (the task's metric) and, for classes, per-class accuracy from outputs on a whole split."""
    return tasks.get(task).score(out, y, num_classes)


def evaluate(model: nn.Module, t: Tensors, task: str, num_classes: int = 0, train_mode: bool = False,
             precision: str = "auto") -> dict[str, Any]:
    """Loss, score and per-class accuracy of `model` on a whole split, under the run's precision."""
    if not isinstance(t, Tensors):      # a streamed split sums its metrics batch by batch (engine/streamed.py)
        return t.evaluate(model, task, num_classes, train_mode=train_mode, precision=precision)
    out = predict(model, t.x, train_mode=train_mode, precision=precision)
    return score_outputs(out, t.y, task, num_classes)


def error_of(score: float) -> float:
    """The error a score implies: 1 - accuracy, or 1 - R² (MSE over variance)."""
    return 1.0 - score


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from recipe.workspace import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": json.loads(json.dumps(meta, default=str))}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with weights_only=True: a checkpoint that tries to run code is refused, not executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RecipeError(f"{path}: checkpoint not found") from None
    except Exception as e:  # pickle.UnpicklingError and friends: refuse, never execute
        raise RecipeError(f"{path}: refusing to load checkpoint: it is not a plain weights file "
                          f"({e.__class__.__name__}: {str(e).splitlines()[0][:160]})") from None


def fit(
    model: nn.Module,
    train: Tensors,
    val: Optional[Tensors],
    *,
    task: str,
    num_classes: int,
    optimizer: str,
    lr: float,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    epochs: int = 30,
    seed: int = 0,
    precision: str = "auto",
    early_stopping: Optional[dict] = None,
    max_seconds: Optional[float] = None,
    metrics_path: Optional[Path] = None,
    on_epoch: Optional[Callable[[int, dict], None]] = None,
    progress: Optional[Callable[[int, dict], None]] = None,
    augment: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple]] = None,
    monitor_every: int = 50,
    health_thresholds: Optional[dict] = None,
    restore_best: bool = True,
    eval_train: bool = True,
    grad_clip: Optional[float] = None,
    schedule: Optional[Schedule] = None,
    devices: int = 1,
) -> RunResult:
    """Train `model` in place; returns history, best val metrics and health checks.

    With restore_best, the weights at the best val epoch are loaded back at the end (early stopping).
    grad_clip caps the global gradient norm before each step; schedule sets each step's lr from `lr` over the
    run's epochs x steps per epoch (warmup, cosine). Both None: today's loop, bit for bit.
    devices > 1 trains this one run with DistributedDataParallel over that many processes, this one rank 0
    (recipe/engine/distributed.py); the same global batches in the same order, so the same run up to float order.
    The epochs run in the engine's one epoch loop (recipe/engine/loop.py), as every stacked member's do.
    """
    rank = None
    if devices > 1:
        from recipe.engine import distributed

        rank = distributed.current()
        if rank is None:        # start the other ranks; this process re-enters fit as rank 0
            kwargs = {k: v for k, v in locals().items() if k not in ("model", "train", "val", "devices", "rank",
                                                                     "distributed")}
            return distributed.fit(fit, model, train, val, devices, kwargs)
    device = train.device
    seed_everything(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)                   # the batch order: the same on every rank
    if rank is not None:
        torch.manual_seed(seed + rank.rank)     # dropout masks differ between the ranks' shares
    model.to(device)
    used, note = resolve_precision(device, precision)
    _note(note)
    scaler = torch.amp.GradScaler(device.type) if used == "fp16" else None
    log = RunLog(metrics_path)
    health = Health(model, every=monitor_every, thresholds=health_thresholds, amp_scaled=scaler is not None,
                    on_flush=log.step)
    run = loop.Run(result=RunResult(precision=used, devices=devices), health=health, log=log, model=model,
                   on_epoch=on_epoch, progress=progress, gen=gen, seed=seed)
    single = Single(run, train, val, task=task, num_classes=num_classes, precision=used, scaler=scaler,
                    opt=make_optimizer(optimizer, model.parameters(), lr, weight_decay),
                    batch_size=min(batch_size, len(train)), augment=augment, grad_clip=grad_clip,
                    schedule=None if schedule is None or schedule.is_constant else schedule, lr=lr, epochs=epochs,
                    rank=rank)
    thread_scope = contextlib.ExitStack()     # threads from the work size: see recipe/threads.py
    if device.type == "cpu":
        work = threads.macs_per_sample(model, train.sample()) * single.bs / devices     # a rank's share of a step
        thread_scope.enter_context(threads.using(threads.for_work(work)))
    with thread_scope:
        loop.run_epochs(single, epochs=epochs, early_stopping=early_stopping, max_seconds=max_seconds,
                        restore_best=restore_best, has_val=val is not None, eval_train=eval_train)
    return run.result


class Single:
    """The one loop's strategy for one model (loop.Strategy): torch.optim, autocast, an fp16 GradScaler, augment."""

    def __init__(self, run: loop.Run, train: Tensors, val: Optional[Tensors], *, task: str, num_classes: int,
                 precision: str, scaler, opt, batch_size: int, augment=None, grad_clip: Optional[float] = None,
                 schedule: Optional[Schedule] = None, lr: float = 0.0, epochs: int = 1, rank=None):
        self.active, self.step, self.task = [run], 0, task
        self.train, self.val, self.num_classes, self.precision = train, val, num_classes, precision
        self.scaler, self.opt, self.bs, self.augment = scaler, opt, batch_size, augment
        self.grad_clip, self.schedule, self.base_lr = grad_clip, schedule, lr
        self.total_steps = steps_per_epoch(len(train), batch_size) * epochs      # the schedule's horizon
        self.ac = _autocast(train.device, precision)
        self.t = tasks.get(task)
        self.compute_loss = loss_fn(task)
        self.num_outputs = self.t.num_outputs(num_classes)
        # one run across devices (distributed.Rank): the forward goes through DDP, which averages the gradients;
        # augment draws from a generator of its own so the batch order stays the same on every rank
        self.rank = rank
        self.net = run.model if rank is None else rank.wrap(run.model)
        self.aug_gen = run.gen if rank is None else rank.generator(train.x.device, run.seed)
        self.local_samples = 0

    def train_epoch(self, epoch: int, leave) -> list[float]:
        run, train, step = self.active[0], self.train, self.step
        model, health, result, opt, scaler = run.model, run.health, run.result, self.opt, self.scaler
        model.train()
        epoch_loss = torch.zeros((), device=train.device)
        batches = 0
        try:
            share = None if self.rank is None else self.rank.share     # this rank's rows of each global batch
            for xb, yb, rows in train.batches(self.bs, run.gen, share):  # by index in memory, or streamed from disk
                mine = len(yb)
                if self.augment is not None:
                    xb, yb = self.augment(xb, yb, self.aug_gen)
                health.before_forward(step)
                if self.ac is None:
                    out = self.net(xb)
                else:
                    with self.ac:
                        out = self.net(xb)
                if step == 0:
                    out = check_output(out, mine, self.task, self.num_outputs)
                else:
                    out = self.t.flat(out)
                loss = self.compute_loss(out.float(), yb)    # float32 loss under bf16/fp16 autocast
                if self.rank is not None:     # the global batch's loss for the monitors, its share for backward
                    loss, seen = self.rank.split_loss(loss, mine, rows)
                else:
                    seen = loss
                if step == 0:
                    result.first_loss = float(seen.detach())
                opt.zero_grad(set_to_none=True)
                if self.schedule is not None:
                    lr = self.base_lr * self.schedule.factor(step, self.total_steps)
                    for group in opt.param_groups:
                        group["lr"] = lr
                if scaler is None:
                    loss.backward()
                    health.before_step(step)    # the monitors see the raw gradient norm, before any clipping
                    if self.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)        # the monitors read the true gradients, not 65536x them
                    health.before_step(step)
                    if self.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                health.after_step(step)
                epoch_loss += seen.detach()
                health.on_batch_end(step, seen)
                step += 1
                self.step = step
                batches += 1
                result.samples += rows
                self.local_samples += mine
            health.flush(step - 1)
        except NonFiniteLoss:
            result.stopped = "non_finite"
            leave([0])
            return []
        return [float(epoch_loss) / max(batches, 1)]

    def evaluate(self) -> list[dict]:
        return [evaluate(self.active[0].model, self.val, self.task, self.num_classes, precision=self.precision)]

    def snapshot(self, j: int):
        return copy.deepcopy(self.active[j].model.state_dict())

    def release(self, positions: list[int]) -> list:
        if self.rank is not None:     # every rank leaves here at once: merge what each one saw
            self.rank.merge(self.active[0], self.local_samples)
        self.active = []
        return [None]

    def agree(self, gone: list[int]) -> list[int]:
        """The loop's stop decision: rank 0's (it alone evaluates and runs the callbacks) on every rank."""
        return gone if self.rank is None else self.rank.agree(self.active[0], gone)

    def load(self, run: loop.Run, weights) -> None:
        if weights is not None:
            run.model.load_state_dict(weights)

    def evaluate_run(self, run: loop.Run, split: str) -> dict:
        return evaluate(run.model, self.train if split == "train" else self.val, self.task, self.num_classes,
                        precision=self.precision)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one of Single's epochs: ceil(n / bs) batches, less a 1-sample tail batch (skipped)."""
    bs = min(batch_size, n)
    batches = -(-n // bs) if n else 0
    return batches - 1 if batches > 1 and n % bs == 1 else batches


def fit_from_config(model, train: Tensors, val: Optional[Tensors], cfg, ds, *, seed: Optional[int] = None,
                    **kwargs) -> RunResult:
    """fit() with the experiment's train section; keyword arguments override it."""
    t = cfg.train
    # a language model has no classes (ds.num_classes is 0) but one logit per token: fit's num_classes is the
    # width task.num_outputs turns into the output size (baseline_text passes ds.num_outputs the same way)
    width = ds.num_outputs if ds.inputs == "tokens" else ds.num_classes
    params = dict(
        task=ds.task, num_classes=width, optimizer=t.optimizer, lr=t.lr, weight_decay=t.weight_decay,
        batch_size=t.batch_size, epochs=t.epochs, seed=cfg.seed if seed is None else seed, precision=t.precision,
        early_stopping=t.early_stopping.model_dump() if t.early_stopping else None, max_seconds=t.max_seconds,
        restore_best=t.early_stopping is not None,   # without early stopping, the last epoch is the model
        health_thresholds=cfg.checks, grad_clip=t.grad_clip, schedule=schedule_from_config(t),
    )
    from recipe.engine import distributed

    params["devices"] = distributed.devices_for(cfg)     # train.devices where the stage honours it
    if cfg.data.augment:
        from recipe.engine.augment import build

        params["augment"] = build(cfg.data.augment, ds.shape)
    params.update(kwargs)
    return fit(model, train, val, **params)
