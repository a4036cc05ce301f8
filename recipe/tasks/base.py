"""The task interface: everything that differs between classification, regression and later tasks.

Stages, engine, predict and report ask the task object (`recipe.tasks.get(name)`) instead of branching on the
task's name. A new task is one module with one `Task` subclass, registered with `@register`; its tests go in
tests/tasks/. Methods take torch tensors as the engine holds them: `out` is a model's output on a split or batch,
`y` the targets as the network sees them (class ids, standardized values, token ids).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

if TYPE_CHECKING:    # annotations only: listing the tasks must not import torch (recipe schema, config checks)
    import numpy as np
    import torch


class Task:
    name: ClassVar[str]
    metric: ClassVar[str]            # the score's key in records and curves: "accuracy", "r2"
    metric_label: ClassVar[str]      # the score as people read it: "accuracy", "R²"
    loss_label: ClassVar[str]        # "log-loss", "squared error"
    loss_unit: ClassVar[str]         # unit of a per-row loss difference, for evidence
    higher_is_better: ClassVar[bool] = True   # of the score; the loss is always lower-is-better
    stratify: ClassVar[bool] = False          # splits keep target ratios equal (needs discrete targets)
    has_classes: ClassVar[bool] = False       # targets are class ids with priors, per-class scores, confusion
    distribution: ClassVar[bool] = False      # outputs are logits of a distribution (classes, next tokens): a
                                              # distilled student learns the teacher's softmax at a temperature
    trivial: ClassVar[str]                    # the dumb_models key of the constant predictor ("majority", "mean")
    balanced_label: ClassVar[str]             # balanced_score's name in evidence ("balanced accuracy", "R²")
    probe_label: ClassVar[str]                # probe_value's axis label on baseline's prediction-dynamics plot
    paired_test: ClassVar[str]                # how baseline_rows are compared: "mcnemar" (0/1 rows), "bootstrap"
    memorize_loss_key: ClassVar[str] = "max_loss"       # overfit.memorize's threshold key for the final loss
    memorize_min_score: ClassVar[Optional[float]] = None  # overfit.memorize also needs this score (None: loss only)
    # the baselines.json key overfit.train-fit's train score must beat: the best dumb model's val score, since a
    # gradient-boosting model's train score is memorization, not a bar a network must clear on train
    train_fit_baseline: ClassVar[str] = "best_dumb_val"
    row_loss_key: ClassVar[str] = "loss"         # regularize.beats-baselines' evidence key for per-row losses
    row_loss_label: ClassVar[str] = "loss"       # ... and its name in titles ("MSE", "loss")

    # ------------------------------------------------------------------ the score's direction

    def gain(self, new: float, old: float) -> float:
        """How much better score `new` is than `old` in the score's units: > 0 when it is better (a higher
        accuracy, a lower loss). Every "beats" in a stage goes through this, never through `>`."""
        return new - old if self.higher_is_better else old - new

    def error(self, score: float) -> float:
        """The score as an error, lower is better: 1 - accuracy, 1 - R², or the score itself when it is a loss."""
        return 1.0 - score if self.higher_is_better else score

    # ------------------------------------------------------------------ outputs and losses

    def num_outputs(self, num_classes: int) -> int:
        """Width of the model's output for this task."""
        raise NotImplementedError

    def shape_output(self, out: torch.Tensor, batch: int, num_outputs: int) -> torch.Tensor:
        """Validate a model's output shape (a clear ModelError otherwise) and bring it to the loss's shape."""
        raise NotImplementedError

    def flat(self, out: torch.Tensor) -> torch.Tensor:
        """A valid output in the loss's shape, without validation (the hot path after the first batch)."""
        return out

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training loss (float32) of outputs in the loss's shape."""
        raise NotImplementedError

    def unreduced_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row training loss (float32) of outputs in the loss's shape: what stacked members average."""
        raise NotImplementedError

    def flat_members(self, out: torch.Tensor) -> torch.Tensor:
        """Stacked members' outputs (K, B, ...) brought to the loss's shape per member, without validation."""
        k, b = out.shape[:2]
        flat = self.flat(out.reshape(k * b, *out.shape[2:]))
        return flat.reshape(k, b, *flat.shape[1:])

    def row_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row loss (float64): the unit a paired bootstrap resamples."""
        raise NotImplementedError

    def row_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row contribution to the score, higher is better (float64): correctness, or minus squared error."""
        raise NotImplementedError

    def score(self, out: torch.Tensor, y: torch.Tensor, num_classes: int = 0) -> dict[str, Any]:
        """Loss and score of outputs on a whole split: {"loss", "score", self.metric: score, ...}."""
        raise NotImplementedError

    def score_sums(self, out: torch.Tensor, y: torch.Tensor) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Per row, a numerator and a denominator (float64 numpy) whose ratio of sums over any set of rows is the
        score on those rows: what a bootstrap over rows, or over documents (groups of rows), resamples. None when
        the score is no such ratio (R² divides by the resample's own variance)."""
        return None

    # ------------------------------------------------------------------ rankings: which way is better

    def signed(self, score: float) -> float:
        """The score oriented so that higher is better: the score itself, or minus a lower-is-better score (a
        language model's val loss). What rankings, "best so far" and "beats X by more than noise" compare, so
        that no stage branches on the task to know which way is better."""
        return score if self.higher_is_better else -score

    @property
    def direction(self) -> str:
        """Optuna's study direction for this score: "maximize", or "minimize" for a lower-is-better score."""
        return "maximize" if self.higher_is_better else "minimize"

    # ------------------------------------------------------------------ predictions

    def prediction(self, out: torch.Tensor) -> torch.Tensor:
        """What an ensemble averages and predict writes: probabilities (N, C), or predictions (N,)."""
        raise NotImplementedError

    def combine(self, outputs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        """Weighted average of members' outputs, returned in output space (log-probabilities or predictions)."""
        raise NotImplementedError

    def as_output(self, out: torch.Tensor) -> torch.Tensor:
        """One model's output in the space `combine` returns, so a single model and an ensemble compare."""
        return out

    def disagreement(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """How differently two models predict a split (0: the same predictions)."""
        raise NotImplementedError

    def in_target_units(self, pred: np.ndarray, target_stats: dict[str, float]) -> np.ndarray:
        """`prediction`'s values as the user reads them (regression: undo the target standardization)."""
        return pred

    def csv_lines(self, pred: np.ndarray, key: str, rows: Sequence[str], classes: Optional[Sequence[Any]],
                  cell) -> list[str]:
        """predict's CSV: a header (`key`, then "prediction", then any per-class columns) and one line per row.
        `cell` quotes one value for CSV."""
        return [f"{key},prediction"] + [f"{r},{v:.6g}" for r, v in zip(rows, pred)]

    def labels(self, pred: np.ndarray, classes: Optional[Sequence[Any]]) -> list:
        """One prediction per row as the user reads it: the original label, or the value in target units."""
        return pred.tolist()

    def baseline_rows(self, net_out: np.ndarray, base_pred: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Per val row, the network (outputs) and a dumb baseline (sklearn predictions in the network's target
        space) for regularize.beats-baselines: correctness (paired_test "mcnemar") or a loss ("bootstrap")."""
        raise NotImplementedError

    # ------------------------------------------------------------------ expectations from the data report

    def output_bias(self, priors: Optional[Sequence[float]]) -> torch.Tensor:
        """The final layer's bias that makes the untrained model predict the train targets' mean or priors."""
        raise NotImplementedError

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        """The loss of a model whose output is the bias above, from inspect's data report."""
        raise NotImplementedError

    def acceptable_init_losses(self, report: dict[str, Any], num_classes: int) -> list[float]:
        """Initial losses that are fine for a model as built (before recipe sets the output bias)."""
        return [self.expected_init_loss(report)]

    def init_loss_evidence(self, num_classes: int) -> dict[str, Any]:
        """What baseline.init-loss adds to its evidence to say where the expected loss comes from."""
        return {}

    def init_prediction(self, out: torch.Tensor, out_built: torch.Tensor, priors: Optional[Sequence[float]],
                        num_classes: int, th: dict[str, Any]) -> dict[str, Any]:
        """baseline.bias-init's measure: how far the mean prediction of the untrained model is from the train
        targets' mean or priors, after recipe's bias init (`out`) and as built (`out_built`), against the check's
        thresholds `th`. Returns {"bad", "bad_built", "what", "built_what", "gap", "evidence"}: evidence holds
        {"after_recipe_init", "as_built", ...the thresholds used}."""
        raise NotImplementedError

    # ------------------------------------------------------------------ baseline's model checks

    def loss_input(self, out: torch.Tensor, y: torch.Tensor) -> tuple[str, str, dict[str, Any], str]:
        """baseline.loss-input: do the outputs look like what the loss expects (logits, unbounded values)?
        Returns (status, title, evidence, advice)."""
        raise NotImplementedError

    def balanced_score(self, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
        """A score a constant prediction cannot inflate (baseline.input-independent): balanced accuracy, R²."""
        raise NotImplementedError

    def probe_value(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One number per probed val row for baseline's prediction-dynamics plot (p(true class), prediction)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ dumb baselines

    def dumb_models(self, seed: int) -> dict[str, Any]:
        """The dumb baselines, unfitted (sklearn estimators whose `.score` is this task's score)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ targets as the data loader holds them

    def network_target(self, y, target_stats: dict[str, float]):
        """Targets (numpy, as loaded) as the network sees them: class ids, or standardized values."""
        raise NotImplementedError
