"""Distillation (Hinton et al. 2015): one student trained on the ensemble's soft targets, and the rule that
lets it ship only where val says it is not worse, beyond noise, than the model it would replace."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from recipe import checks as C
from recipe import tasks

if TYPE_CHECKING:
    from recipe.stages.ensemble.members import Member

TEMPERATURE = 2.0        # Hinton et al. 2015: soft targets at T > 1 carry the teacher's "dark knowledge"


class Tempered(nn.Module):
    """The student as trained on soft targets: logits divided by the temperature."""

    def __init__(self, student: nn.Module, temperature: float):
        super().__init__()
        self.student, self.temperature = student, temperature

    def forward(self, x):
        return self.student(x) / self.temperature


def distill(cfg, ctx, ds, best: Member, members: list[Member], weights) -> tuple[nn.Module, dict[str, Any]]:
    """One student of the best member's size trained on the ensemble's soft targets (train rows only)."""
    from recipe.engine import train as E
    from recipe.engine.monitors import compact
    from recipe.models import create
    from recipe.stages.ensemble.members import _curve
    from recipe.stages.ensemble.selection import combine

    tr, va = ctx.tensors("train"), ctx.tensors("val")
    precision = cfg.train.precision
    teacher = combine([E.predict(m.model, tr.x, precision=precision) for m in members], weights,
                      ds.task)                                                         # (N, C) log-probs or (N,)
    scfg = cfg.with_overrides(best.overrides)
    student = create(scfg, ds, cfg.seed + 1000).to(ctx.device)
    if tasks.get(ds.task).distribution:
        soft = torch.softmax(teacher / TEMPERATURE, -1)                      # (N, C) or (N, T, V) soft targets
        target, net = E.Tensors(tr.x, soft), Tempered(student, TEMPERATURE)
    else:
        target, net = E.Tensors(tr.x, teacher.float()), student
    r = E.fit_from_config(net, target, va, scfg, ds, eval_train=False, augment=None,
                          metrics_path=_curve(ctx, "student"))
    info = {"temperature": TEMPERATURE if tasks.get(ds.task).distribution else None, "size_of": best.name,
            "epochs": len(r.history), "seconds": round(r.seconds, 2), "stopped": r.stopped,
            "overrides": best.overrides, "transfer_set": "train rows", "health": compact(r.health)}
    return student.eval(), info


def check_student(student_out: torch.Tensor, replaced_out: torch.Tensor, replaced: str, y: torch.Tensor,
                  task: str, num_classes: int, seed: int, groups=None) -> C.Check:
    """ensemble.distill: the student ships only if its val score is within noise of (or above) the model it
    replaces. "Worse beyond noise" is the one-sided 95% paired-bootstrap bound of (replaced - student) per val
    row above 0: correctness for classification, squared error (reversed) for regression, loss per window for
    a language model (its val documents resampled: `groups`)."""
    from recipe.stages.ensemble.stats import _lower, _score, paired_bootstrap
    t = tasks.get(task)
    out = t.as_output(student_out)
    s, r = _score(out, y, task, num_classes), _score(replaced_out, y, task, num_classes)
    # > 0: the replaced model is better (right where the student is wrong, or a smaller squared error)
    delta = (t.row_score(replaced_out, y) - t.row_score(out, y)).cpu().numpy()
    unit = f"{t.metric_label} per row" if t.has_classes else t.loss_unit
    mean, lo, hi = paired_bootstrap(delta, seed + 2, groups=groups)
    bound = _lower(delta, seed + 2, groups)
    ev = {"student_val": round(s["score"], 4), "replaced": replaced, "replaced_val": round(r["score"], 4),
          "shortfall": {"mean": round(mean, 5), "ci95": [round(lo, 5), round(hi, 5)],
                        "lower_bound_95": round(bound, 5), "unit": unit}}
    if bound > 0:
        return C.make("ensemble.distill", "warn", f"the student (val {s['score']:.4f}) is worse than the {replaced} "
                      f"it would replace (val {r['score']:.4f}) beyond bootstrap noise: the {replaced} ships", ev,
                      "Give the student more capacity or epochs, or keep the model that ships; the student is saved "
                      "as student.pt for inspection.")
    return C.make("ensemble.distill", "pass", f"the student (val {s['score']:.4f}) is within noise of or better than "
                  f"the {replaced} (val {r['score']:.4f}): the student ships", ev)
