"""tune's pictures: the tuning history, val against each searched parameter, and fANOVA importances."""
from __future__ import annotations

import json

from recipe.stages.tune.space import _decode


def pictures(ctx, study, complete, space, task=None) -> None:
    """history.png, params/<key>.png for each searched parameter, importances.json (+ .png when it could be computed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipe import plots

    signed = task.signed if task is not None else (lambda v: v)      # a language model's best is its lowest loss
    label = task.metric_label if task is not None else "val score"
    ordered = sorted(complete, key=lambda t: t.number)
    best_so_far, cur = [], None
    for t in ordered:
        cur = t.value if cur is None or signed(t.value) > signed(cur) else cur
        best_so_far.append(cur)
    numbers = [t.number for t in ordered]
    ctx.artifacts.figure("history.png", plots.curves(
        {"trial val": [t.value for t in ordered], "best so far": best_so_far}, "trial", label,
        "tuning history", x={"trial val": numbers, "best so far": numbers}))
    for key, p in space.items():
        pts = [(_decode(t.params[key]), t.value) for t in complete if key in t.params]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        if "choices" in p:
            labels = [json.dumps(c) for c in p["choices"]]
            xs = [labels.index(json.dumps(v)) for v, _ in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        else:
            xs = [float(v) for v, _ in pts]
            if p.get("log"):
                ax.set_xscale("log")
            ax.axvspan(float(p["low"]), float(p["high"]), color="tab:green", alpha=0.06, label="range")
        ax.scatter(xs, [y for _, y in pts], s=18)
        ax.scatter([xs[0]], [pts[0][1]], s=60, facecolors="none", edgecolors="tab:red", label="best")
        ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.set_title(f"val vs {key}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        ctx.artifacts.figure(f"params/{key}.png", fig)
    _importances(ctx, study, complete)


def _importances(ctx, study, complete) -> None:
    import optuna

    varied = [k for k in complete[0].params if len({json.dumps(t.params.get(k)) for t in complete}) > 1]
    try:
        if len(complete) < 3 or not varied:
            raise ValueError(f"needs at least 3 complete trials and a parameter that varies "
                             f"({len(complete)} trials, varied: {varied})")
        importances = optuna.importance.get_param_importances(
            study, params=varied, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        out = {"importances": {k: round(float(v), 4) for k, v in importances.items()}, "method": "fanova"}
    except Exception as e:   # too few trials, or a space Optuna cannot evaluate: say why, not a crash
        out = {"importances": {}, "error": f"{type(e).__name__}: {e}"[:300]}
    ctx.artifacts.json("importances.json", out)
    if out["importances"]:
        from recipe import plots

        keys = list(out["importances"])
        ctx.artifacts.figure("importances.png", plots.bars(keys, [out["importances"][k] for k in keys],
                                                           [0.0] * len(keys), "parameter importance (fANOVA)",
                                                           "importance"))
