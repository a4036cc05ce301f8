"""The stage sections of the experiment config (overfit, regularize, tune, ensemble): what each later stage may be
told, with key-path errors from pydantic. `recipe.config.schema` assembles them into Config."""
from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from recipe.config.base import Section


class OverfitConfig(Section):
    samples: int = Field(16, ge=1, description="Size of the batch to memorize.")
    steps: int = Field(500, ge=1, description="Optimizer steps allowed to memorize it.")


LADDER_RUNGS = (
    "learning_curve", "augment", "fewer_features", "smaller_model", "smaller_batch",
    "dropout", "weight_decay", "early_stopping", "larger_model",
)


class RegularizeConfig(Section):
    ladder: list[Literal[LADDER_RUNGS]] = Field(list(LADDER_RUNGS), description="Rungs tried, in this order.")
    seeds: int = Field(2, ge=1, description="Seeds per variant, so deltas come with their noise.")
    target_error: float = Field(0.0, ge=0, description="Human-level / Bayes error for the bias "
                                "verdict; 0: estimated from the baselines and inspect's label-noise rate.")
    budget_seconds: Optional[float] = Field(None, gt=0, description="Stop trying rungs after this long.")
    jobs: int = Field(1, ge=1, description="Worker processes for independent rungs.")


class SpaceParam(Section):
    low: Optional[float] = Field(None, description="Lower bound.")
    high: Optional[float] = Field(None, description="Upper bound.")
    log: bool = Field(False, description="Sample on a log scale.")
    integer: bool = Field(False, description="Integer parameter (int values in low/high imply it).")
    choices: Optional[list[Any]] = Field(None, description="Categorical choices.")

    @model_validator(mode="after")
    def _range_or_choices(self):
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give {low, high} or {choices: [...]}")
        if self.low >= self.high:
            raise ValueError(f"low must be < high (got {self.low} >= {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class TuneConfig(Section):
    method: Literal["random", "grid", "quasi-random", "tpe"] = Field("random", description="Search method.")
    trials: int = Field(30, ge=1, description="Trials in the study, in total across workers and resumes.")
    jobs: int = Field(1, ge=1, description="Worker processes sharing the study.")
    pruner: Literal["none", "asha", "median"] = Field("none", description="Prune unpromising trials early.")
    storage: Optional[str] = Field(None, description="Optuna storage URL; default a journal file under runs/.")
    batch: Optional[int] = Field(None, ge=1, description="Trials trained as one stacked model (1: off; unset: "
                                 "chosen from the model size and the device).")
    space: dict[str, SpaceParam] = Field(default_factory=dict, description="key.path -> range or choices.")
    artifacts: Optional[str] = Field(None, description="Shared folder (every machine of the study reaches it) "
                                     "where trials' checkpoints go through Optuna's artifact store; relative to "
                                     "the config file. Default: the local run folder.")

    @field_validator("artifacts")
    @classmethod
    def _artifact_folder(cls, v):
        # a folder on a shared filesystem; an object store URL would be Optuna's Boto3ArtifactStore, not built yet
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must name a folder every machine of the study can reach (got an empty path)")
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", v)
        if scheme:
            raise ValueError(f"must be a shared filesystem folder, not a {scheme.group(1)}:// URL (object storage "
                             f"through Optuna's Boto3ArtifactStore is not supported yet; got '{v}')")
        return v

    @field_validator("space")
    @classmethod
    def _known_keys(cls, v):
        for key in v:
            from recipe.config.loading import _key_problem   # loading imports this module

            problem = _key_problem(key.split("."))
            if problem:
                raise ValueError(f"'{key}' is not a config key ({problem})")
        return v


class EnsembleConfig(Section):
    top_k: int = Field(5, ge=1, description="Members taken from the best tuned trials.")
    method: Literal["greedy", "average"] = Field("greedy", description="Member selection on val.")
    seeds: int = Field(0, ge=0, description="Extra seed re-trains of the best configuration.")
    long_epochs: int = Field(0, ge=0, description="Best configuration trained this many times longer (0: off).")
    distill: bool = Field(False, description="Train one student on the ensemble's soft targets.")
