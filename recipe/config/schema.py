"""The experiment config's schema: pydantic sections, the Config model, section digests."""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from recipe.config.base import Section
from recipe.config.sizes import parse_size
from recipe.config.stages import (LADDER_RUNGS, EnsembleConfig, OverfitConfig, RegularizeConfig,  # noqa: F401
                                  SpaceParam, TuneConfig)

MAX_YAML_ALIASES = 100  # a YAML "billion laughs" bomb needs many more; real configs use a few



class SplitConfig(Section):
    val: float = Field(0.15, gt=0, lt=1, description="Fraction of rows held out for validation.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of rows sealed for the final test.")
    stratify: bool = Field(True, description="Keep class ratios equal across splits (classification).")

    @model_validator(mode="after")
    def _fractions_leave_train(self):
        # exactly 10% is allowed: 0.75 + 0.15 is 0.9000000000000001 in floating point, so compare with a margin
        if self.val + self.test > 0.9 + 1e-9:
            raise ValueError(f"val + test must leave at least 10% for train (got {self.val} + {self.test})")
        return self


class DataConfig(Section):
    source: Optional[str] = Field(
        None, description="builtin:<sklearn toy set> | path to .csv/.parquet/.npz | image folder | 'module:function'."
    )
    target: str = Field("label", description="Target column for tabular files.")
    features: Optional[list[str]] = Field(None, description="Feature columns; default all but the target.")
    missing: Literal["fail", "impute"] = Field("fail", description="fail on missing values, or impute from train.")
    max_categories: int = Field(50, ge=2, description="String columns are one-hot encoded up to this many levels.")
    train: Optional[str] = Field(None, description="Explicit train file (then `source` may be omitted).")
    val: Optional[str] = Field(None, description="Explicit validation file.")
    test: Optional[str] = Field(None, description="Explicit test file.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Split fractions when no files are given.")
    normalize: Literal["standard", "minmax", "none"] = Field(
        "standard", description="Feature normalization; statistics from the train split only."
    )
    shape: Optional[list[int]] = Field(None, description="Per-sample shape, e.g. [1, 8, 8] for image models.")
    augment: list[Literal["hflip", "crop", "noise", "shift"]] = Field(
        default_factory=list, description="Augmentations regularize may try (hflip changes labels of some data)."
    )
    # text data (recipe/data/text): a .txt file, a folder of .txt files, or a table with a text column
    text: Optional[str] = Field(None, description="Text column of a CSV/Parquet/JSONL source (text data).")
    tokenizer: Literal["char", "byte", "bpe"] = Field(
        "char", description="Text tokenizer: char (train's characters + unknown), byte (256), bpe (trained on train)."
    )
    vocab_size: int = Field(512, ge=2, description="BPE vocabulary size (data.tokenizer: bpe; at least 257).")
    block_size: int = Field(128, ge=1, description="Context length in tokens (text data).")
    chunk_chars: int = Field(2000, ge=1, description="A single .txt file is cut into contiguous chunks of this many "
                                                     "characters, split by chunk (never interleaved).")
    memory_budget: Optional[int] = Field(
        None, description="Bytes a table may take in memory before it streams from disk (Parquet row groups): an "
                          "integer or '512MB', '2GB', '1.5GiB' (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024). "
                          "Default: half of the RAM available when the data loads (recipe/data/streaming.py).")

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget_bytes(cls, v):
        return None if v is None else parse_size(v)

    @field_validator("text")
    @classmethod
    def _text_column(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must name the column that holds the text (got an empty name)")
        return v

    @field_validator("vocab_size")
    @classmethod
    def _bpe_vocab(cls, v, info):
        # byte-level BPE starts from the 256 byte values: a smaller vocabulary cannot hold a single merge
        if info.data.get("tokenizer") == "bpe" and v <= 256:
            raise ValueError(f"must exceed 256 for data.tokenizer: bpe (256 byte symbols + merges; got {v})")
        return v

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v):
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError(f"must be a list of positive sizes (got {v})")
        return v

    @model_validator(mode="after")
    def _has_data(self):
        if self.source is None and self.train is None:
            raise ValueError("set data.source, or data.train (with optional data.val / data.test)")
        return self


# channels per stage when model.hidden is not set: cnn, two conv blocks; resnet, a ResNet-18-like stack for small
# images (one residual block per stage, each later stage strided: 8x8 -> 8, 4, 2)
IMAGE_MODEL_CHANNELS = {"cnn": (32, 64), "resnet": (16, 32, 64)}
MODEL_KINDS = ("linear", "mlp", "cnn", "resnet", "gpt", "lstm", "gru")


class ModelConfig(Section):
    kind: str = Field("mlp", description="linear | mlp | cnn | resnet | gpt | lstm | gru | 'package.module:Factory'.")
    hidden: list[int] = Field([256, 256], description="Hidden widths (mlp), or channels per stage (cnn, resnet; "
                                                      "default [32, 64] and [16, 32, 64]).")
    activation: Literal["relu", "leaky_relu", "tanh", "sigmoid", "gelu"] = Field("relu", description="Activation.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability before each hidden layer's output.")
    init: Literal["default", "kaiming", "xavier"] = Field("default", description="Weight initialisation.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for an import-path factory.")
    n_layer: int = Field(2, ge=1, description="Transformer blocks (gpt) or recurrent layers (lstm, gru).")
    n_head: int = Field(4, ge=1, description="Attention heads per block (gpt).")
    n_embd: int = Field(128, ge=1, description="Embedding width, also the recurrent width (gpt, lstm, gru).")
    tie_weights: bool = Field(True, description="The language-model head shares the token embedding (gpt, lstm, "
                                                "gru).")
    pool: Literal["last", "mean"] = Field("last", description="text-classification: features of the last non-pad "
                                                              "token, or their mean over non-pad tokens.")
    drop_inputs: list[int] = Field(
        default_factory=list, description="Encoded input columns set to 0 (the train mean when standardized) before "
                                          "the network: what regularize's fewer_features rung keeps.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v):
        if v in MODEL_KINDS or re.fullmatch(r"[\w.]+:[\w]+", v):
            return v
        close = difflib.get_close_matches(v, list(MODEL_KINDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"must be {', '.join(MODEL_KINDS)} or 'package.module:Factory' (got '{v}'){hint}")

    @field_validator("n_embd")
    @classmethod
    def _heads_divide_width(cls, v, info):
        # each head attends over n_embd / n_head dimensions; checked for gpt only (lstm and gru have no heads)
        heads = info.data.get("n_head")
        if info.data.get("kind") == "gpt" and heads and v % heads:
            raise ValueError(f"must be divisible by model.n_head (got n_embd {v}, n_head {heads}); "
                             f"try n_embd {v - v % heads or heads}")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v):
        if any(h <= 0 for h in v):
            raise ValueError(f"widths must be positive (got {v})")
        return v

    @field_validator("drop_inputs")
    @classmethod
    def _column_positions(cls, v):
        if any(i < 0 for i in v):
            raise ValueError(f"column positions must be >= 0 (got {v})")
        return sorted(set(v))

    @model_validator(mode="after")
    def _image_model_channels(self):
        # model.hidden's default suits an MLP; a conv net given 256 channels per stage is ~100x slower for
        # nothing on small images, so cnn and resnet get their own defaults unless hidden is set explicitly
        if "hidden" not in self.model_fields_set and self.kind in IMAGE_MODEL_CHANNELS:
            self.__dict__["hidden"] = list(IMAGE_MODEL_CHANNELS[self.kind])
        return self


class EarlyStopping(Section):
    patience: int = Field(10, ge=1, description="Epochs without improvement before stopping.")
    metric: Literal["val_loss", "val_score"] = Field("val_loss", description="What must improve.")


class TrainConfig(Section):
    optimizer: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"] = Field(
        "adam", description="Optimizer."
    )
    lr: float = Field(3e-4, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    batch_size: int = Field(64, ge=1, description="Mini-batch size.")
    epochs: int = Field(30, ge=1, description="Passes over the train split.")
    early_stopping: Optional[EarlyStopping] = Field(None, description="{patience, metric} or null.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    max_seconds: Optional[float] = Field(None, gt=0, description="Stop a run after this many seconds.")
    grad_clip: Optional[float] = Field(None, gt=0, description="Clip the global gradient norm to this before each "
                                                               "step (null: off).")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning rate per step: constant, or cosine decay to min_lr_ratio x lr.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from lr / warmup_steps to lr over these steps.")
    warmup_fraction: Optional[float] = Field(None, ge=0, lt=1, description="Warmup as a fraction of all steps "
                                                                           "(instead of warmup_steps).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine: the final lr as a fraction of train.lr.")
    devices: int = Field(1, ge=1, le=1024, description="Processes that train one run together (DistributedDataParallel: "
                                                       "one per GPU with NCCL, gloo on CPU); regularize and ensemble "
                                                       "honour it, see README.")

    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_steps and self.warmup_fraction is not None:
            raise ValueError("set train.warmup_steps or train.warmup_fraction, not both "
                             f"(got {self.warmup_steps} and {self.warmup_fraction})")
        return self


class CheckOverride(BaseModel):
    model_config = ConfigDict(extra="allow")
    severity: Optional[Literal["fail", "warn", "skip"]] = Field(None, description="Cap the check's status at this.")
    reason: str = Field(..., min_length=1, description="Why this override is right (mandatory).")

    @property
    def thresholds(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _task_enum(schema: dict) -> None:
    """The schema lists the tasks registered when it is written (a test module's toy task included)."""
    from recipe import tasks

    for option in schema.get("anyOf", []):
        if option.get("type") == "string":
            option["enum"] = tasks.names()


class Config(Section):
    name: str = Field(..., description="runs/<name>/ holds everything this experiment writes.")
    seed: int = Field(0, ge=0, description="Seed for Python, NumPy and torch.")
    task: Optional[str] = Field(None, description="A registered task (recipe.tasks); inferred if absent.",
                                json_schema_extra=_task_enum)
    data: DataConfig = Field(..., description="Where the data comes from and how it is split.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training loop.")
    overfit: OverfitConfig = Field(default_factory=OverfitConfig, description="Stage 3 budget.")
    regularize: RegularizeConfig = Field(default_factory=RegularizeConfig, description="Stage 4 ladder.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Stage 5 search.")
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig, description="Stage 6.")
    checks: dict[str, CheckOverride] = Field(default_factory=dict, description="Per-check severity/thresholds.")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Optional[Path] = PrivateAttr(default=None)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v):
        from recipe import tasks     # listing the tasks imports no torch (built-in tasks load on first use)

        if v is None:
            return v

        known = tasks.names()
        if v in known:
            return v
        close = difflib.get_close_matches(v, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"must be one of {', '.join(known)} (got {v!r}){hint}")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v) or ".." in v:
            raise ValueError(f"must be letters, digits, '.', '_' or '-' and stay inside the runs folder (got '{v}')")
        return v

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v):
        from recipe.checks import CATALOG

        for check_id, override in v.items():
            if check_id not in CATALOG:
                close = difflib.get_close_matches(check_id, list(CATALOG), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown check id '{check_id}'{hint}")
            known = CATALOG[check_id].thresholds
            for key in override.thresholds:
                if key not in known:
                    allowed = ", ".join(sorted(known)) or "none"
                    raise ValueError(f"{check_id}.{key}: not a threshold of this check (thresholds: {allowed})")
        return v

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def path(self) -> Optional[Path]:
        return self._path

    def resolve(self, relative: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self._base_dir / p)

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied and validated (errors name the key)."""
        from recipe.config.loading import _set_path, validate   # loading imports this module

        raw = self.model_dump(mode="json", exclude_unset=False)
        for key, value in overrides.items():
            _set_path(raw, key.split("."), value, key)
        new = validate(raw)
        new._base_dir, new._path = self._base_dir, self._path
        return new

    def get(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        return obj


SECTIONS = ("seed", "task", "data", "model", "train", "overfit", "regularize", "tune", "ensemble", "checks")


def section_digests(cfg: Config, sections: tuple[str, ...] = SECTIONS) -> dict[str, str]:
    """Content digest of each config section, so the gate can name the one that changed."""
    dumped = cfg.model_dump(mode="json")
    return {s: digest_json(dumped[s]) for s in sections}


def digest_json(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
