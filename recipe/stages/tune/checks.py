"""tune's three checks: tune.improves (beats regularize beyond noise), tune.boundary and tune.noise."""
from __future__ import annotations

import json
import math
from typing import Any, Optional

from recipe import checks as C
from recipe.stages.tune.bounds import widen
from recipe.stages.tune.space import _decode, _encode


def _param_count(cfg, ds, overrides: dict) -> int:
    from recipe.models import count_parameters, create

    return count_parameters(create(cfg.with_overrides(overrides), ds, 0))


def _position(value: Any, p: dict) -> Optional[float]:
    """Where a value sits in its range, 0 (low end) .. 1 (high end); choices by their index in the list."""
    if "choices" in p:
        enc = [_encode(c) for c in p["choices"]]
        if len(enc) < 2 or value not in enc:
            return None
        return enc.index(value) / (len(enc) - 1)
    lo, hi, v = float(p["low"]), float(p["high"]), float(value)
    if p.get("log"):
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _spearman(xs: list[float], ys: list[float]) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return 0.0
    rho = spearmanr(np.asarray(xs), np.asarray(ys)).statistic
    return float(rho) if math.isfinite(rho) else 0.0


def _signed(task):
    """The task's "higher is better" orientation of a score (task.signed); no task: the score as it is."""
    return task.signed if task is not None else (lambda v: v)


def check_boundary(complete, space, th, task=None) -> C.Check:
    """Rule: the best trial within the outer `edge_fraction` of a range (or at the end of a choice list) warns;
    it FAILS when, over at least `min_trials` trials, val also improves toward that edge (Spearman rho of
    position vs the val score oriented by `task.signed`, so a falling val loss counts, >= `trend`): then the
    optimum most likely lies outside the range and tuning inside it is wasted. `complete` is ranked best first."""
    edge, trend, min_trials = th["edge_fraction"], th["trend"], th["min_trials"]
    signed = _signed(task)
    moves = "rises" if task is None or task.higher_is_better else "falls"     # improves: a val loss falls
    best = complete[0]
    rows, failing, warning, edges = {}, [], [], []
    for key, p in space.items():
        if key not in best.params:
            continue
        pos = _position(best.params[key], p)
        if pos is None:
            continue
        pairs = [(_position(t.params[key], p), signed(t.value)) for t in complete if key in t.params]
        pairs = [(x, y) for x, y in pairs if x is not None]
        rho = _spearman([x for x, _ in pairs], [y for _, y in pairs])
        side = "low" if pos <= edge else "high" if pos >= 1 - edge else None
        rows[key] = {"position": round(pos, 3), "rho": round(rho, 3), "value": _decode(best.params[key])}
        if side is None:
            continue
        toward = rho if side == "high" else -rho
        rows[key]["side"] = side
        advice, rows[key]["valid_edge"] = widen(key, p, side)
        text = f"{key}={_fmt(_decode(best.params[key]))} at the {side} end ({advice})"
        if rows[key]["valid_edge"]:     # the range already reaches what is valid: nothing to widen
            edges.append(text)
        elif len(pairs) >= min_trials and toward >= trend:
            failing.append(text + f"; val {moves} toward it (rho {toward:.2f} over {len(pairs)} trials)")
        else:
            warning.append(text)
    ev = {"params": rows, "edge_fraction": edge, "trend": trend, "best_trial": best.number}
    advice = ("Widen the range past that edge in tune.space and tune again. The rule: best value in the outer "
              f"{edge:.0%} (or the last choice) warns; it fails when val also {moves} toward that edge across "
              f"trials (Spearman rho >= {trend}, at least {min_trials} trials): the optimum is then outside.")
    if not rows:     # nothing was judged (one-choice lists, keys the trials did not sample): say so
        return C.make("tune.boundary", "skip", "no tuned parameter has a range the best trial can sit in", ev)
    note = "; at the edge of what is valid: " + "; ".join(edges) if edges else ""
    if failing:
        return C.make("tune.boundary", "fail", "the optimum lies beyond the range: " + "; ".join(failing + warning)
                      + note, ev, advice)
    if warning:
        return C.make("tune.boundary", "warn", "best value at the edge of its range: " + "; ".join(warning) + note,
                      ev, advice)
    return C.make("tune.boundary", "pass", "the best trial sits inside every range" + (" it could widen" + note
                                                                                       if edges else ""), ev)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


def check_noise(cfg, ctx, ds, complete, th) -> tuple[C.Check, dict, float]:
    """Rerun the top distinct configurations with extra seeds (batched into one stacked model where possible).
    Configurations whose seed mean is within the pooled seed std of the best are equivalent: the simplest wins
    (fewest parameters; then the best mean). Means are compared the task's way (task.signed: a language
    model's lowest val loss is the best). Returns the check, the chosen entry and the pooled seed std."""
    import numpy as np

    from recipe import tasks

    signed = tasks.get(ds.task).signed

    from recipe.engine.batched import fit_seeds

    n_seeds, n_top = int(th["seeds"]), int(th["top"])
    distinct, seen = [], set()
    for t in complete:
        key = json.dumps(t.user_attrs.get("overrides"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append(t)
        if len(distinct) == n_top:
            break
    # common random numbers: every configuration gets the same extra seeds, so their differences are sharper
    seeds = [cfg.seed + 1000 * (i + 1) for i in range(n_seeds)]
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    entries, how = [], ""
    for t in distinct:
        overrides = t.user_attrs["overrides"]
        vcfg = cfg.with_overrides(overrides)
        curves = [ctx.dir / "runs" / f"noise-{t.number}-seed{s}" / "metrics.jsonl" for s in seeds]
        results, _, how = fit_seeds(vcfg, ds, tr, va, seeds, ctx.device, curves=curves)
        vals = [r.best.get("score", math.nan) for r in results]
        vals = [v for v in vals if math.isfinite(v)] or [math.nan]
        entries.append({"trial": t.number, "overrides": overrides, "trial_val": t.value, "seeds": vals,
                        "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                        "parameters": _param_count(cfg, ds, overrides)})
    pooled = float(np.sqrt(np.nanmean([e["std"] ** 2 for e in entries]))) if entries else 0.0
    ranked = sorted(entries, key=lambda e: -signed(e["mean"]))
    best = ranked[0]
    equivalent = [e for e in ranked if signed(best["mean"]) - signed(e["mean"]) <= pooled]
    chosen = min(equivalent, key=lambda e: (e["parameters"], -signed(e["mean"])))
    ev = {"configurations": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()
                              if k != "overrides"} for e in ranked],
          "seed_std": round(pooled, 4), "extra_seeds": seeds, "how": how, "chosen_trial": chosen["trial"]}
    if len(entries) < 2:
        return (C.make("tune.noise", "skip", "only one distinct configuration completed: nothing to compare", ev),
                chosen, pooled)
    spread = signed(best["mean"]) - min(signed(e["mean"]) for e in entries)
    ev["spread"] = round(spread, 4)
    if len(equivalent) > 1:
        names = ", ".join(f"#{e['trial']} {e['mean']:.4f}" for e in equivalent)
        check = C.make("tune.noise", "warn", f"the differences between the top configurations are noise: {names} "
                       f"lie within one seed std ({pooled:.4f}) of each other; choosing the simplest, "
                       f"#{chosen['trial']} ({chosen['parameters']} parameters)", ev,
                       "Do not read the ranking: more trials will not separate them; spend the budget on seeds "
                       "(ensemble.seeds) or on a wider space.")
    else:
        check = C.make("tune.noise", "pass", f"trial #{best['trial']} (mean {best['mean']:.4f} over {len(seeds)} seeds) "
                       f"beats the next by more than the seed std {pooled:.4f}", ev)
    return check, chosen, pooled


# ----------------------------------------------------------------------------- tune.improves


def none_completed(counts: dict, infeasible: int, n_counted: int, infeasible_fraction: float) -> C.Check:
    return C.make("tune.improves", "fail", f"no trial completed: {infeasible} of {n_counted} trials diverged "
                  f"(infeasible fraction {infeasible_fraction:.2f})",
                  {"states": counts, "infeasible_fraction": round(infeasible_fraction, 3)},
                  "Look at the failed trials in trials.csv (NaN loss?): narrow the learning-rate range.")


def check_improves(best_val: float, reference: float, noise: float, ev: dict, task=None) -> C.Check:
    """The tuned configuration's seed mean against regularize's val, beyond the larger of their noises; "beats"
    the task's way (task.signed: a lower val loss beats a higher one)."""
    signed = _signed(task)
    gain = signed(best_val) - signed(reference)        # > 0: the tuned configuration is better
    ev["direction"] = task.direction if task is not None else "maximize"
    if gain > noise:
        return C.make("tune.improves", "pass", f"tuned val {best_val:.4f} (mean over seeds) beats the "
                      f"regularized model ({reference:.4f}) by more than noise {noise:.4f}", ev)
    if -gain > noise:
        # a warning, not a failure: regularize's model stays available and the ensemble stage includes it
        return C.make("tune.improves", "warn", f"tuned val {best_val:.4f} is worse than the regularized "
                      f"model ({reference:.4f}) beyond noise {noise:.4f}", ev,
                      "Keep regularize's configuration (the ensemble includes it); to search again, add "
                      "trials or centre tune.space on chosen.yaml (or drop tune.space for the default).")
    return C.make("tune.improves", "warn", f"tuned val {best_val:.4f} is within noise {noise:.4f} of "
                  f"the regularized model ({reference:.4f})", ev,
                  "Tuning found nothing beyond seed noise: widen the space or add trials, or keep "
                  "regularize's configuration.")
