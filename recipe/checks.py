"""Check results, the check catalog (ids, thresholds, sources) and severity overrides.

This module imports neither torch nor scikit-learn: `recipe checks` must answer fast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Optional

Status = Literal["pass", "warn", "fail", "skip"]
STATUS_ORDER = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


@dataclass
class Check:
    id: str
    status: Status
    title: str
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""
    refs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Check":
        return cls(**{k: d[k] for k in ("id", "status", "title", "evidence", "advice", "refs") if k in d})


@dataclass(frozen=True)
class Spec:
    id: str
    stage: str
    catches: str
    refs: tuple[str, ...]
    thresholds: dict[str, Any] = field(default_factory=dict)
    statuses: tuple[str, ...] = ()     # what the check itself can return (a severity override can only lower it)


def _spec(id: str, stage: str, catches: str, refs: str, **thresholds: Any) -> Spec:
    return Spec(id, stage, catches, tuple(refs.split()), thresholds)


# Sources (the refs column of `recipe checks`, explained under its table from REF_SOURCES).
REF_SOURCES = {
    "recipe": "recipe:N = step N of Karpathy's 'A Recipe for Training Neural Networks'",
    "37": "37:N = item N of '37 Reasons why your Neural Network is not working'",
    "dev-test": "dev-test:*, bias-variance, init, gradcheck = classic deep-learning practice (train/dev/test "
                "splits, bias vs variance, initialization, gradient checking)",
    "bias-variance": "", "init": "", "gradcheck": "",
    "autotrainer": "autotrainer, deepdiagnosis = the papers whose training-monitor thresholds are used",
    "deepdiagnosis": "",
}
_SPECS = [
    _spec("data.load", "inspect", "unreadable data, mismatched shapes, empty split", "recipe:1 37:1"),
    _spec("data.non-finite", "inspect", "NaN / inf in inputs or targets", "recipe:1 37:1 37:37"),
    _spec("data.constant", "inspect", "constant or all-zero features", "recipe:1 37:1", max_constant_fraction=0.5),
    _spec("data.duplicates", "inspect", "repeated rows inside train", "recipe:1", max_fraction=0.05),
    _spec("data.leak", "inspect", "identical rows (inputs and target) across train/val/test; shared inputs told apart",
          "dev-test:leak 37:15", max_fraction=0.01, ngram=50, ngram_chars=200),
    _spec("data.label-conflict", "inspect", "identical inputs with different labels", "37:4", max_fraction=0.01),
    _spec("data.imbalance", "inspect", "class ratios, single-class data, classes absent from a split", "37:8",
          min_ratio=0.1, fail_ratio=0.01),
    _spec("data.split-shift", "inspect", "label distribution differs between splits", "dev-test:same-distribution",
          max_tv_distance=0.1),
    _spec("data.scale", "inspect", "unnormalized features, stats not from train only", "37:12 37:15 dev-test:normalize",
          max_range_ratio=100.0, mean_tolerance=0.05, std_tolerance=0.05),
    _spec("data.order", "inspect", "data sorted by label; batches that hold a single class", "37:7 37:10",
          max_single_class_batches=0.5),
    _spec("data.size", "inspect", "too few samples per class / per parameter", "37:9 37:27", min_per_class=10),
    _spec("data.outliers", "inspect", "extreme values", "recipe:1 37:1", z=10.0, max_fraction=0.005),
    _spec("data.label-noise", "inspect", "likely mislabeled samples (confident learning on CV predictions)",
          "37:6 recipe:1", max_noise_rate=0.1, sample=20000, min_probe_accuracy=0.5, confident_p=0.1),
    _spec("data.signal", "inspect", "input carries no information about the target (probe vs shuffled labels)",
          "37:2 37:4 37:5", min_gain=0.02, sample=5000),
    _spec("data.images", "inspect", "channel order, 0–255 range, corrupt files, mixed shapes", "37:1 37:14"),
    _spec("data.vocab", "inspect", "text: vocabulary size and coverage; val/test tokens never seen in train; a "
          "tokenizer fitted on val/test", "recipe:1 dev-test:leak", warn_unseen_fraction=0.001, fail_unseen_fraction=0.01),
    _spec("data.lengths", "inspect", "text: document and token lengths (histograms); truncated documents, too "
          "few eval windows", "recipe:1", max_truncated_fraction=0.2, min_eval_windows=8),
    _spec("data.empty", "inspect", "text: empty or whitespace-only documents", "recipe:1 37:1", max_fraction=0.05),
    _spec("data.decode", "inspect", "text: bytes that are not UTF-8 (file and byte offset named)", "recipe:1 37:1"),
    _spec("data.windows", "inspect", "text: decoded training windows as the model sees them; targets not the "
          "inputs shifted by one, padding inside a document", "recipe:1 37:1"),
    _spec("baseline.seed", "baseline", "same seed does not give the same run", "recipe:2"),
    _spec("baseline.init-loss", "baseline", "initial loss far from -log(1/C) / prior entropy / target variance",
          "recipe:2 37:17 37:28", rel_tolerance=0.25),
    _spec("baseline.bias-init", "baseline", "final layer bias not set to class priors / target mean", "recipe:2",
          max_tv=0.1, max_mean_offset=0.25),
    # orders: the n-gram models a language model must beat (1 and 2 always; a 5-gram on little text is strong)
    _spec("baseline.dumb", "baseline", "majority/mean, linear and gradient-boosting scores to beat", "recipe:2",
          orders=[1, 2, 3, 5]),
    _spec("baseline.input-independent", "baseline", "model with zeroed inputs does as well as the real one",
          "recipe:2 37:2", min_gap=0.05, min_loss_gain=0.05),
    _spec("baseline.batch-independence", "baseline", "sample i's loss has gradient on sample j (view vs permute bugs)",
          "recipe:2 37:25", tolerance=1e-7),
    _spec("baseline.loss-input", "baseline", "softmax / sigmoid output fed to a logits loss", "37:18 37:19"),
    _spec("baseline.grad-flow", "baseline", "parameters that never receive gradient (frozen, unused)", "37:23"),
    _spec("baseline.gradcheck", "baseline", "custom layers whose gradient is wrong (float64 gradcheck)", "37:22 37:26 gradcheck"),
    _spec("baseline.loss-decreases", "baseline", "training loss does not go down", "recipe:2 37:16", min_drop=0.05),
    _spec("baseline.causal", "baseline", "output at position t depends on tokens after t (missing causal mask)",
          "recipe:2 37:25", rtol=1e-5),
    _spec("baseline.target-shift", "baseline", "next-token targets equal the inputs or are shifted the wrong way",
          "recipe:2 37:1", min_agreement=0.99, max_loss_ratio=0.25),
    _spec("baseline.padding", "baseline", "pad positions counted in the loss (no ignore_index / mask)", "37:18",
          tolerance=1e-6),
    _spec("overfit.memorize", "overfit-batch", "one small batch cannot be driven to ~zero loss", "recipe:3 37:16 37:27",
          # lm_max_loss, nats per token: a batch of windows cannot reach 0, since its first positions see one or two
          # tokens of context and windows that start alike (" t", "e ") cannot be told apart there; that costs
          # about ln 2 per shared prefix, a few thousandths of a nat per token over 16 x T targets. 0.1 nats/token
          # (mean p(next) >= 0.9) is near-zero next to the unigram (~3 nats, char) and far below any n-gram.
          max_loss=0.05, regression_max_loss=0.01, lm_max_loss=0.1),
    _spec("overfit.lr-range", "overfit-batch", "learning-rate range test; recommended LR", "37:36"),
    _spec("overfit.train-fit", "overfit-batch", "model cannot fit the train set beyond the best baseline", "recipe:3 37:24"),
    _spec("regularize.bias-variance", "regularize", "verdict from train error vs baseline and val gap", "bias-variance recipe:4",
          high_bias=0.05, high_variance=0.05),
    _spec("regularize.ladder", "regularize", "each regularizer alone, ablation table, combination kept", "recipe:4 37:13"),
    _spec("regularize.too-strong", "regularize", "regularization makes the model underfit", "37:30"),
    _spec("regularize.mode", "regularize", "train-mode vs eval-mode discrepancy (dropout/BN)", "37:32", max_gap=0.05),
    _spec("regularize.still-improving", "regularize", "val still improving at the end: train longer", "37:31 recipe:6",
          min_recent_gain=0.005),
    _spec("regularize.beats-baselines", "regularize", "final model does not beat the dumb baselines (paired test "
          "on the same val rows)", "recipe:2 recipe:4", alpha=0.05),
    _spec("tune.boundary", "tune", "best value sits at the edge of its range", "recipe:5", edge_fraction=0.1,
          trend=0.5, min_trials=5),
    _spec("tune.noise", "tune", "top trials are within seed-to-seed noise", "recipe:5", top=3, seeds=3),
    _spec("tune.improves", "tune", "tuning did not beat the regularized model", "recipe:5"),
    _spec("ensemble.gain", "ensemble", "ensemble no better than the best member", "recipe:6"),
    _spec("ensemble.distill", "ensemble", "distilled student worse than the model it would replace (val, beyond noise)",
          "recipe:6"),
    _spec("ensemble.test", "ensemble", "final test score, computed once", "dev-test:sealed recipe:6"),
    _spec("ensemble.beats-ngram", "ensemble", "language model: the final model's sealed-test loss is not below "
          "the best n-gram model's (chosen on val; paired bootstrap over test documents)", "recipe:2 recipe:6"),
    _spec("health.non-finite", "any", "NaN/inf loss or gradient (stop at once, name step and layer)", "37:37"),
    _spec("health.exploding", "any", "gradient norm or loss blowing up", "37:35 autotrainer", loss_factor=10.0,
          grad_norm=1e3, window=10),
    _spec("health.vanishing", "any", "first-layer gradient tiny next to last-layer gradient", "37:35 autotrainer",
          ratio=1e-3),
    _spec("health.dead-units", "any", "most ReLU units never active", "37:35 autotrainer deepdiagnosis", fraction=0.7),
    _spec("health.saturation", "any", "most sigmoid/tanh units saturated", "37:35 deepdiagnosis", fraction=0.5),
    _spec("health.update-ratio", "any", "update/weight ratio far from ~1e-3", "37:36", low=1e-5, high=1e-1),
    _spec("health.loss-curve", "any", "loss increasing, plateaued or oscillating", "recipe:3 37:36"),
    _spec("health.symmetry", "any", "identical units at init", "37:28 init"),
]
# The statuses each check can return, kept true two ways: `make` refuses any other (a recipe bug, caught by
# the suite), and tests/test_checks.py compares this table with every literal status in the source.
_STATUSES = {
    "data.load": "pass",
    "data.non-finite": "pass fail",
    "data.constant": "pass warn fail",
    "data.duplicates": "pass warn",
    "data.leak": "pass warn fail",
    "data.label-conflict": "pass warn fail skip",
    "data.imbalance": "pass warn fail skip",
    "data.split-shift": "pass warn",
    "data.scale": "pass warn fail skip",
    "data.order": "pass warn",
    "data.size": "pass warn fail",
    "data.outliers": "skip pass warn fail",     # skip: streamed data (recipe/data/kinds/table_stream.py)
    "data.label-noise": "pass warn fail skip",
    "data.signal": "pass fail skip",
    "data.images": "pass warn skip",
    "data.vocab": "pass warn fail",
    "data.lengths": "pass warn",
    "data.empty": "pass warn fail",
    "data.decode": "pass fail",
    "data.windows": "pass fail",
    "baseline.seed": "pass fail",
    "baseline.init-loss": "pass warn fail",
    "baseline.bias-init": "pass warn fail",
    "baseline.dumb": "pass warn",
    "baseline.input-independent": "pass fail",
    "baseline.batch-independence": "pass fail skip",
    "baseline.loss-input": "pass warn fail",
    "baseline.grad-flow": "pass fail",
    "baseline.gradcheck": "pass warn fail skip",
    "baseline.loss-decreases": "pass fail",
    "baseline.causal": "pass fail skip",
    "baseline.target-shift": "pass fail",
    "baseline.padding": "pass fail skip",
    "overfit.memorize": "pass warn fail",
    "overfit.lr-range": "pass warn",
    "overfit.train-fit": "pass fail",
    "regularize.bias-variance": "pass warn",
    "regularize.ladder": "pass warn",
    "regularize.too-strong": "pass warn fail",
    "regularize.mode": "pass warn",
    "regularize.still-improving": "pass warn skip",
    "regularize.beats-baselines": "pass warn fail",
    "tune.boundary": "pass warn fail skip",
    "tune.noise": "pass warn skip",
    "tune.improves": "pass warn fail",
    "ensemble.gain": "pass warn fail",
    "ensemble.distill": "pass warn",
    "ensemble.test": "pass warn skip",
    "ensemble.beats-ngram": "pass warn fail",
    "health.non-finite": "pass fail",
    "health.exploding": "pass fail skip",
    "health.vanishing": "pass fail skip",
    "health.dead-units": "pass fail skip",
    "health.saturation": "pass fail skip",
    "health.update-ratio": "pass warn fail skip",
    "health.loss-curve": "pass warn skip",
    "health.symmetry": "pass fail skip",
}
_SPECS = [Spec(s.id, s.stage, s.catches, s.refs, s.thresholds,
               tuple(sorted(_STATUSES[s.id].split(), key=STATUS_ORDER.__getitem__))) for s in _SPECS]
CATALOG: dict[str, Spec] = {s.id: s for s in _SPECS}


def make(check_id: str, status: Status, title: str, evidence: dict | None = None, advice: str = "") -> Check:
    """Build a check result with its catalog refs attached."""
    spec = CATALOG[check_id]
    if status not in spec.statuses:    # the catalog tells users what a check can say: it must not lie
        raise ValueError(f"{check_id} returned {status!r}, which its catalog entry does not list {spec.statuses}")
    return Check(check_id, status, title, evidence or {}, advice, list(spec.refs))


def thresholds(check_id: str, overrides: dict | None = None) -> dict[str, Any]:
    """The check's thresholds: catalog defaults, then the config's `checks.<id>` overrides."""
    merged = dict(CATALOG[check_id].thresholds)
    override = (overrides or {}).get(check_id)
    if override is not None:
        merged.update(override.thresholds)
    return merged


def apply_overrides(checks: Iterable[Check], overrides: dict | None) -> list[Check]:
    """Cap each check at its configured severity; the reason goes into the evidence."""
    out = []
    for c in checks:
        o = (overrides or {}).get(c.id)
        if o is not None and o.severity is not None and STATUS_ORDER[c.status] > STATUS_ORDER[o.severity]:
            c.evidence = {**c.evidence, "overridden": {"from": c.status, "to": o.severity, "reason": o.reason}}
            c.status = o.severity
        out.append(c)
    return out


def worst(checks: Iterable[Check]) -> Optional[Status]:
    statuses = [c.status for c in checks]
    return max(statuses, key=STATUS_ORDER.__getitem__) if statuses else None


STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim",
                "passed": "green", "forced": "yellow", "failed": "bold red", "interrupted": "magenta",
                "stale": "yellow", "missing": "dim", "running": "cyan"}


def render(checks: list[Check], console, title: str = "checks", verbose: bool = False) -> None:
    """A table of results (recipe.render.check_table: compact on a narrow terminal or log)."""
    from recipe.render import check_table

    console.print(check_table(checks, console.width, title, verbose))
