"""Health monitors run inside the one training loop (health.* checks of DESIGN §5).

Cheap facts are taken every step without a device sync (the loss tensor is buffered); everything that
costs more (gradient norms, update/weight ratios, activation statistics) is sampled every `every` steps,
so the monitors cost a few percent of throughput (scripts/bench_engine.py measures it).

Thresholds and their sources (overridable under `checks:` in the config):
- health.exploding: the smoothed loss (running mean over `window` batches) above `loss_factor` x the first
  window's, or gradient norm above `grad_norm` (AUTOTRAINER's exploding-gradient rule). One small batch
  whose loss is 10x the first batch's is a hard batch, not a blow-up (issue 17: a 303-row regression with
  batch 16 failed on one batch at 4.8 against a first batch of 0.18, its gradient norm never above 1.3).
- health.vanishing: first-layer / last-layer gradient-norm ratio below `ratio` = 1e-3 (AUTOTRAINER).
- health.dead-units: a layer where at least `fraction` = 70% of ReLU units never fire on the sampled
  batches (AUTOTRAINER and DeepDiagnosis use 70%).
- health.saturation: a layer where more than `fraction` = 50% of sigmoid/tanh outputs sit beyond the
  linear range (DeepDiagnosis).
- health.update-ratio: median |update| / |weight| per step outside [`low`, `high`] around the healthy
  ~1e-3 (Karpathy, CS231n).
- health.symmetry: weight matrices whose units (rows) are identical at init (zero or constant init).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from recipe import checks as C

SATURATED = {nn.Sigmoid: (0.01, 0.99), nn.Tanh: (-0.99, 0.99)}


class NonFiniteLoss(Exception):
    """Raised inside the loop to stop at once; carries the step and the first bad layer."""

    def __init__(self, step: int, layer: Optional[str], what: str):
        self.step, self.layer, self.what = step, layer, what
        super().__init__(f"non-finite {what} at step {step}" + (f" (first in {layer})" if layer else ""))


def first_non_finite_parameter(model: nn.Module) -> tuple[Optional[str], str]:
    """Name of the first parameter (in module order) whose gradient or value is NaN/inf."""
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name, "gradient"
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return name, "weight"
    return None, "loss"


def _weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Weight matrices / kernels of the layers that learn (not biases, not norms), in module order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]


class Health:
    """Collects per-run health evidence and turns it into health.* checks."""

    def __init__(self, model: nn.Module, every: int = 50, thresholds: Optional[dict] = None,
                 amp_scaled: bool = False, on_flush: Optional[Callable[[int, float], None]] = None):
        self.model = model
        # fp16 with a GradScaler: a step whose unscaled gradients overflowed is skipped by the scaler (and the
        # scale lowered), so its inf norm is the scaler's business, not evidence of an exploding gradient
        self.amp_scaled = amp_scaled
        self.overflow_steps = 0
        self.on_flush = on_flush                         # (last step, mean train loss): metrics.jsonl step lines
        self.every = max(1, every)                       # losses are checked for NaN every `every` steps
        self.sample_every = max(4 * self.every, 200)     # gradients, updates, activations: sampled rarer
        self.th = {cid: C.thresholds(cid, thresholds) for cid in C.CATALOG if cid.startswith("health.")}
        self.pending: list[torch.Tensor] = []
        self.first_step = 0
        self.epoch_losses: list[float] = []
        self.non_finite: Optional[NonFiniteLoss] = None
        self.first_loss: Optional[float] = None
        self.max_loss = -math.inf
        self.max_loss_step = -1
        self.window = max(1, int(self.th["health.exploding"].get("window", 1)))
        self._recent: list[float] = []                   # the last `window` batch losses
        self.first_smoothed: Optional[float] = None      # mean of the first `window` losses
        self.max_smoothed, self.max_smoothed_step = -math.inf, -1
        self.grad_norms: list[tuple[int, float]] = []          # (step, total grad norm)
        self.layer_ratio: list[float] = []                       # first / last layer grad norm
        self.update_ratios: dict[str, list[float]] = {}
        self.active: dict[str, torch.Tensor] = {}                # unit -> ever active (ReLU family)
        self.saturated: dict[str, list[float]] = {}              # fraction saturated per sample
        self.symmetric: list[str] = []
        self._hooks: list = []
        self._snapshot: Optional[list[torch.Tensor]] = None
        self.weights = _weights(model)
        self._act_modules = [(n, m) for n, m in model.named_modules()
                             if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh))]
        self._check_symmetry()

    # -- called by the engine ------------------------------------------------------------
    def sampling(self, step: int) -> bool:
        """Early steps (where init problems show) and then every `sample_every` steps."""
        return step in (0, 1, 10) or step % self.sample_every == 0

    def before_forward(self, step: int) -> None:
        """On sampled steps: watch activations during this forward pass."""
        if not self.sampling(step) or not self._act_modules:
            return
        for name, m in self._act_modules:
            self._hooks.append(m.register_forward_hook(self._activation_hook(name, type(m))))

    def before_step(self, step: int) -> None:
        """On sampled steps, after backward: gradient statistics, and a snapshot for the update ratio."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if not self.sampling(step) or not self.weights:
            return
        norms = [p.grad.detach().float().norm() if p.grad is not None else torch.zeros((), device=p.device)
                 for _, p in self.weights]
        stacked = torch.stack(norms).cpu()
        total = float(stacked.norm())
        if self.amp_scaled and not math.isfinite(total):
            self.overflow_steps += 1
            return
        self.grad_norms.append((step, total))
        if len(stacked) >= 2 and float(stacked[-1]) > 0:
            self.layer_ratio.append(float(stacked[0]) / float(stacked[-1]))
        self._snapshot = [p.detach().clone() for _, p in self.weights]

    def after_step(self, step: int) -> None:
        if self._snapshot is None:
            return
        with torch.no_grad():   # one device sync for all layers
            pairs = torch.stack([torch.stack([(p.detach() - old).float().norm(), old.float().norm()])
                                 for (_, p), old in zip(self.weights, self._snapshot)]).cpu()
        for (name, _), (delta, denom) in zip(self.weights, pairs.tolist()):
            if denom > 0:
                self.update_ratios.setdefault(name, []).append(delta / denom)
        self._snapshot = None

    def on_batch_end(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())
        if len(self.pending) >= self.every:
            self.flush(step)

    def flush(self, step: int) -> None:
        """One device sync for the pending losses: stop at the first non-finite one."""
        if not self.pending:
            return
        buf = torch.stack(self.pending).float()
        first = self.first_step
        self.pending, self.first_step = [], step + 1
        finite = torch.isfinite(buf)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            layer, what = first_non_finite_parameter(self.model)
            self.non_finite = NonFiniteLoss(first + bad, layer, "loss" if what == "loss" else what)
            raise self.non_finite
        values = buf.cpu()
        if self.on_flush is not None:
            self.on_flush(step, float(values.mean()))
        self.observe_losses(values, first)

    def observe_losses(self, values: torch.Tensor, first_step: int) -> None:
        """Finite batch losses of steps first_step, first_step + 1, ... (CPU): raw and smoothed extremes."""
        if self.first_loss is None:
            self.first_loss = float(values[0])
        i = int(values.argmax())
        if float(values[i]) > self.max_loss:
            self.max_loss, self.max_loss_step = float(values[i]), first_step + i
        recent, w = self._recent, self.window
        for j, v in enumerate(values.tolist()):
            recent.append(v)
            if len(recent) > w:
                del recent[0]
            if len(recent) == w:
                mean = sum(recent) / w
                if self.first_smoothed is None:
                    self.first_smoothed = mean
                if mean > self.max_smoothed:
                    self.max_smoothed, self.max_smoothed_step = mean, first_step + j

    def on_epoch_end(self, train_loss: float) -> None:
        self.epoch_losses.append(train_loss)

    # -- sampling helpers ----------------------------------------------------------------
    def _activation_hook(self, name: str, kind: type):
        def hook(module, args, out):   # returns None: a hook that returns a value would replace the output
            a = out.detach().float()
            units = a.reshape(a.shape[0], a.shape[1], -1).amax(2) if a.ndim > 2 else a   # channels for convs
            if kind in SATURATED:
                lo, hi = SATURATED[kind]
                self.saturated.setdefault(name, []).append(float(((a <= lo) | (a >= hi)).float().mean()))
            else:
                fired = (units > 0).any(0).cpu()
                self.active[name] = fired if name not in self.active else (self.active[name] | fired)
        return hook

    def _check_symmetry(self) -> None:
        for name, p in self.weights:
            w = p.detach().reshape(p.shape[0], -1)
            if w.shape[0] < 2:
                continue
            same = torch.isclose(w, w[:1].expand_as(w), atol=1e-12, rtol=0).all(1)
            if bool(same.all()):
                self.symmetric.append(name)

    # -- verdicts ------------------------------------------------------------------------
    def checks(self) -> list[C.Check]:
        return [self._non_finite(), self._exploding(), self._vanishing(), self._dead(), self._saturation(),
                self._update_ratio(), self._loss_curve(), self._symmetry()]

    def _non_finite(self) -> C.Check:
        if self.non_finite is not None:
            e = self.non_finite
            return C.make(
                "health.non-finite", "fail", f"training produced a non-finite {e.what} at step {e.step}",
                {"step": e.step, "first_bad_parameter": e.layer, "what": e.what},
                "Lower the learning rate, check the data for NaN/inf (recipe inspect), and look for log(0) or "
                "division by zero in custom layers.")
        return C.make("health.non-finite", "pass", "loss stayed finite", {"epochs": len(self.epoch_losses)})

    def _smoothed(self) -> tuple[Optional[float], float, int]:
        """(first, max, step of max) of the running-mean loss; a run shorter than one window is one window."""
        if self.first_smoothed is None and self._recent:
            mean = sum(self._recent) / len(self._recent)
            return mean, mean, self.max_loss_step
        return self.first_smoothed, self.max_smoothed, self.max_smoothed_step

    def _exploding(self) -> C.Check:
        th = self.th["health.exploding"]
        peak = max((g for _, g in self.grad_norms), default=0.0)
        first_s, max_s, max_s_step = self._smoothed()
        ev = {"max_grad_norm": round(peak, 4), "first_loss": self.first_loss, "max_loss": self.max_loss
              if math.isfinite(self.max_loss) else None, "max_loss_step": self.max_loss_step,
              "first_smoothed_loss": first_s, "max_smoothed_loss": max_s if math.isfinite(max_s) else None,
              "max_smoothed_step": max_s_step, **th}
        if self.overflow_steps:
            ev["fp16_overflow_steps_skipped"] = self.overflow_steps
        if self.non_finite is not None and self.grad_norms:
            ev["grad_norm_trace"] = [round(g, 3) for _, g in self.grad_norms[-5:]]
        # judged on the running mean: one hard mini-batch lifts a window's mean by a tenth of its own excess
        loss_blew = first_s is not None and first_s > 0 and max_s > th["loss_factor"] * first_s
        if not self.grad_norms and self.first_loss is None and self.non_finite is None:
            return C.make("health.exploding", "skip", "no loss or gradient norm was observed", ev)
        if peak > th["grad_norm"] or loss_blew or (self.non_finite is not None and self.grad_norms and peak > 10):
            what = f"gradient norm reached {peak:.3g}" if peak > th["grad_norm"] else \
                f"the loss averaged over {self.window} batches rose to {max_s:.3g} (first {first_s:.3g}) by step " \
                f"{max_s_step}, gradient norm up to {peak:.3g}" if loss_blew else \
                f"the loss went non-finite with gradient norm up to {peak:.3g}"
            return C.make("health.exploding", "fail", f"training blew up: {what}", ev,
                          "Lower the learning rate (overfit.lr-range suggests one) or clip gradients.")
        spike = ""
        if self.first_loss and first_s and self.max_loss > th["loss_factor"] * self.first_loss:
            spike = (f"; one batch reached {self.max_loss:.3g} (first batch {self.first_loss:.3g}), but the loss over "
                     f"{self.window} batches stayed within {max_s / first_s:.1f}x its start: a hard batch, not a blow-up")
        if not self.grad_norms:    # no weight matrices to sample: only the loss was watched
            return C.make("health.exploding", "pass", f"loss bounded (max {self.max_loss:.3g}); no gradient norms "
                          "sampled (no weight matrices)" + spike, ev)
        return C.make("health.exploding", "pass", f"gradients bounded (max norm {peak:.3g})" + spike, ev)

    def _vanishing(self) -> C.Check:
        th = self.th["health.vanishing"]
        if not self.layer_ratio:
            return C.make("health.vanishing", "skip", "fewer than two weight layers, or no sampled gradients")
        ratio = sorted(self.layer_ratio)[len(self.layer_ratio) // 2]
        first, last = self.weights[0][0], self.weights[-1][0]
        ev = {"median_first_over_last": ratio, "first_layer": first, "last_layer": last, "ratio": th["ratio"],
              "samples": len(self.layer_ratio)}
        if ratio < th["ratio"]:
            return C.make("health.vanishing", "fail", f"the first layer ({first}) gets {ratio:.2g}x the gradient of "
                          f"the last ({last}): it barely learns", ev,
                          "Use ReLU-family activations with Kaiming init, fewer layers, residual connections or "
                          "normalization instead of a deep sigmoid/tanh stack.")
        return C.make("health.vanishing", "pass", f"first/last layer gradient ratio {ratio:.2g}", ev)

    def _dead(self) -> C.Check:
        th = self.th["health.dead-units"]
        if not self.active:
            return C.make("health.dead-units", "skip", "no ReLU-family activations sampled")
        dead = {n: 1 - float(a.float().mean()) for n, a in self.active.items()}
        worst = max(dead, key=dead.get)
        ev = {"never_active": {n: round(v, 3) for n, v in dead.items()}, "fraction": th["fraction"]}
        if dead[worst] >= th["fraction"]:
            return C.make("health.dead-units", "fail", f"{dead[worst]:.0%} of the units after {worst} never fired", ev,
                          "Dead ReLUs: check for large negative biases or a too-high learning rate; try Kaiming init "
                          "or LeakyReLU.")
        return C.make("health.dead-units", "pass", f"at most {dead[worst]:.0%} of units never fired ({worst})", ev)

    def _saturation(self) -> C.Check:
        th = self.th["health.saturation"]
        if not self.saturated:
            return C.make("health.saturation", "skip", "no sigmoid/tanh activations sampled")
        frac = {n: sum(v) / len(v) for n, v in self.saturated.items()}
        worst = max(frac, key=frac.get)
        ev = {"saturated": {n: round(v, 3) for n, v in frac.items()}, "fraction": th["fraction"]}
        if frac[worst] > th["fraction"]:
            return C.make("health.saturation", "fail", f"{frac[worst]:.0%} of the outputs of {worst} are saturated", ev,
                          "Saturated sigmoid/tanh units pass no gradient: normalize inputs, use Xavier init, or "
                          "switch to ReLU-family activations.")
        return C.make("health.saturation", "pass", f"at most {frac[worst]:.0%} of sigmoid/tanh outputs saturated", ev)

    def _update_ratio(self) -> C.Check:
        th = self.th["health.update-ratio"]
        if not self.update_ratios:
            return C.make("health.update-ratio", "skip", "no sampled optimizer steps")
        med = {n: sorted(v)[len(v) // 2] for n, v in self.update_ratios.items()}
        hi_name, lo_name = max(med, key=med.get), min(med, key=med.get)
        ev = {"median_ratio": {n: float(f"{v:.3g}") for n, v in list(med.items())[:8]}, "low": th["low"],
              "high": th["high"], "healthy": 1e-3}
        if med[hi_name] > th["high"]:
            return C.make("health.update-ratio", "fail" if med[hi_name] > 1 else "warn",
                          f"updates are {med[hi_name]:.2g} of the weights in {hi_name} (healthy ~1e-3)", ev,
                          "The learning rate is too high: lower it (overfit.lr-range suggests one).")
        if med[lo_name] < th["low"]:
            return C.make("health.update-ratio", "warn", f"updates are only {med[lo_name]:.2g} of the weights in "
                          f"{lo_name} (healthy ~1e-3)", ev,
                          "The learning rate is too low, or that layer receives almost no gradient.")
        return C.make("health.update-ratio", "pass", f"update/weight ratios between {med[lo_name]:.2g} and "
                      f"{med[hi_name]:.2g}", ev)

    def _loss_curve(self) -> C.Check:
        losses = [v for v in self.epoch_losses if math.isfinite(v)]
        if len(losses) < 4:
            return C.make("health.loss-curve", "skip", "too few epochs to judge the loss curve",
                          {"epochs": len(losses)})
        first, last, best = losses[0], losses[-1], min(losses)
        diffs = [b - a for a, b in zip(losses, losses[1:])]
        flips = sum(1 for a, b in zip(diffs, diffs[1:]) if a * b < 0) / max(len(diffs) - 1, 1)
        swing = max(abs(d) for d in diffs) / max(abs(best), 1e-12)
        ev = {"first": first, "last": last, "best": best, "epochs": len(losses), "direction_changes": round(flips, 3)}
        if last > first * 1.05:
            return C.make("health.loss-curve", "warn", "training loss went up over the run", ev,
                          "The learning rate is probably too high: lower it (overfit.lr-range suggests one).")
        if flips > 0.6 and swing > 0.5 and last > best * 1.2:
            return C.make("health.loss-curve", "warn", "training loss oscillates from epoch to epoch", ev,
                          "Lower the learning rate or raise the batch size.")
        if abs(first - last) < 0.01 * abs(first) and first > 1e-3:
            return C.make("health.loss-curve", "warn", f"training loss plateaued at {last:.4g}", ev,
                          "Raise the learning rate, check for dead units or a detached graph.")
        return C.make("health.loss-curve", "pass", "training loss went down", ev)

    def _symmetry(self) -> C.Check:
        if self.symmetric:
            return C.make("health.symmetry", "fail", f"identical units at init in {', '.join(self.symmetric[:4])}",
                          {"layers": self.symmetric},
                          "Units that start identical stay identical: use random init (model.init: kaiming or xavier), "
                          "not zeros or a constant.")
        if not self.weights:
            return C.make("health.symmetry", "skip", "no weight matrices to compare units in", {"layers_checked": 0})
        return C.make("health.symmetry", "pass", "no weight matrix starts with identical units",
                      {"layers_checked": len(self.weights)})


def compact(checks) -> list[dict]:
    """A run's health checks as small JSON (id, status, title): what a worker process or a trial sends back."""
    return [{"id": c.id, "status": c.status, "title": c.title} for c in checks]


def worst_per_check(runs) -> list[dict]:
    """For stages that train many runs (regularize, tune, ensemble): per health check, the worst status over
    every run, the run that produced it first, its title, and how many runs ended in each status.

    `runs` is an iterable of (run name, checks) where checks are Check objects or compact() dicts."""
    table: dict[str, dict] = {}
    for name, checks in runs:
        for c in checks:
            cid, status, title = (c["id"], c["status"], c["title"]) if isinstance(c, dict) else (c.id, c.status, c.title)
            row = table.setdefault(cid, {"id": cid, "worst": status, "run": name, "title": title, "runs": {}})
            row["runs"][status] = row["runs"].get(status, 0) + 1
            if C.STATUS_ORDER[status] > C.STATUS_ORDER[row["worst"]]:
                row.update(worst=status, run=name, title=title)
    return [table[k] for k in sorted(table)]


def parameters_without_gradient(model) -> dict:
    """After one backward pass: the parameter tensors that will not learn (frozen, no gradient at all, or an
    all-zero one) and the evidence grad-flow checks record, for every model kind."""
    frozen, unused, zero = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            frozen.append(name)
        elif p.grad is None:
            unused.append(name)
        elif float(p.grad.abs().max()) == 0.0:
            zero.append(name)
    total = sum(1 for _ in model.parameters())
    return {"total": total, "groups": (("frozen", frozen), ("without gradient (unused)", unused),
                                       ("with all-zero gradient", zero)),
            "evidence": {"parameters": total, "frozen": frozen[:8], "no_gradient": unused[:8],
                         "zero_gradient": zero[:8]}}
