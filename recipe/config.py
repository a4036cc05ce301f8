"""The experiment config: pydantic schema, YAML loading, -o overrides, section digests."""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from recipe.errors import ConfigError

MAX_YAML_ALIASES = 100  # a YAML "billion laughs" bomb needs many more; real configs use a few


class Section(BaseModel):
    # NaN and inf are never a sensible learning rate, fraction or budget: refuse them with the key path
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_steps and self.warmup_fraction is not None:
            raise ValueError("set train.warmup_steps or train.warmup_fraction, not both "
                             f"(got {self.warmup_steps} and {self.warmup_fraction})")
        return self


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

    @field_validator("space")
    @classmethod
    def _known_keys(cls, v):
        for key in v:
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


# ----------------------------------------------------------------------------- loading


def _count_aliases(text: str) -> int:
    return sum(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader))


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); re-save the config as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        if _count_aliases(text) > MAX_YAML_ALIASES:
            raise ConfigError(f"{path}: more than {MAX_YAML_ALIASES} YAML aliases; refusing a possible alias bomb")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


def load(path: Path | str, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file; every problem is reported at once."""
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of keys (got {type(raw).__name__})")
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(raw, key.split("."), value, key)
    cfg = validate(raw, source=str(path))
    cfg._base_dir = path.resolve().parent
    cfg._path = path.resolve()
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"-o {item}: expected key.path=value")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"-o {item}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def _set_path(raw: dict, parts: list[str], value: Any, full: str) -> None:
    if parts[0] == "checks" and len(parts) >= 3:
        # check ids are themselves dotted (data.imbalance): checks.<stage>.<name>[.key]
        parts = ["checks", f"{parts[1]}.{parts[2]}", *parts[3:]]
    node = raw
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        if part == "space" and node is raw.get("tune"):
            # tune.space keys are themselves dotted (train.lr): the next two parts name the parameter
            rest = parts[i + 1:]
            param = ".".join(rest[:2]) if len(rest) > 2 else ".".join(rest)
            space = node.setdefault("space", {}) or {}
            node["space"] = space
            if len(rest) <= 2:
                space[param] = value
                return
            space.setdefault(param, {})
            node, parts, i = space[param], [*rest[2:]], 0
            continue
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"{full}: '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
        i += 1
    node[parts[-1]] = value


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class that owns location `loc` (for did-you-mean)."""
    model: Any = Config
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) is Union:
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else annotation
    if args and type(annotation).__name__ == "UnionType":
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else annotation
    return annotation


def _key_problem(parts: list[str]) -> Optional[str]:
    model: Any = Config
    for i, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None if i == len(parts) else f"'{'.'.join(parts[:i])}' has no sub-keys"
        if part not in model.model_fields:
            close = difflib.get_close_matches(part, _field_names(model), n=1)
            return f"did you mean '{'.'.join(parts[:i] + [close[0]])}'?" if close else "unknown key"
        model = _unwrap(model.model_fields[part].annotation)
    return None


_MESSAGE_REWRITES = [
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be >= \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be > \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be <= \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be < \1"),
    (re.compile(r"^Value error, "), ""),
    (re.compile(r"^Assertion failed, "), ""),
]


def _format_error(err: dict) -> str:
    loc = tuple(err["loc"])
    # pydantic puts the failing union/literal member into loc; drop non-key parts
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _field_names(parent), n=1, cutoff=0.6) if parent else []
        hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
        allowed = f" (known keys: {', '.join(_field_names(parent))})" if parent and not close else ""
        return f"{path}: unknown key{hint}{allowed}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"], allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: must be one of {', '.join(allowed)} (got {err['input']!r}){hint}"
    msg = err["msg"]
    for pattern, repl in _MESSAGE_REWRITES:
        msg = pattern.sub(repl, msg)
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or err["type"].startswith("value_error") else f" (got {got!r})"
    return f"{path}: {msg}{shown}"


def validate(raw: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        messages = _unknown_check_ids(raw)
        for err in e.errors():
            line = _format_error(err)
            if line not in messages:
                messages.append(line)
        raise ConfigError(messages) from None


def _unknown_check_ids(raw: dict) -> list[str]:
    """Unknown ids under checks:, reported even when another error stops pydantic before its validator."""
    from recipe.checks import CATALOG

    out = []
    checks = raw.get("checks") if isinstance(raw, dict) else None
    for check_id in checks if isinstance(checks, dict) else ():
        if check_id not in CATALOG:
            close = difflib.get_close_matches(str(check_id), list(CATALOG), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            out.append(f"checks: unknown check id '{check_id}'{hint}")
    return out


def json_schema() -> dict:
    return Config.model_json_schema()


STARTER = """\
# recipe experiment config: `recipe inspect {name}.yaml` starts stage 1.
name: {name}              # runs/<name>/ holds everything this experiment writes
seed: 0
data:
  source: builtin:digits  # builtin:<sklearn set> | path to .csv/.parquet/.npz | image folder | "module:function"
  target: label           # target column for tabular files
  split: {{val: 0.15, test: 0.15, stratify: true}}
  normalize: standard     # statistics from the train split only
model:
  kind: mlp               # linear | mlp | cnn | resnet | "package.module:Factory"
  hidden: [256, 256]
  activation: relu
train:
  optimizer: adam
  lr: 3.0e-4
  batch_size: 64
  epochs: 30
tune:
  trials: 20
  space:
    train.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
    model.dropout: {{low: 0.0, high: 0.5}}
ensemble:
  top_k: 5
"""

MAKEFILE_SNIPPET = """\
# recipe stages as Make targets: each refuses (exit 3) until the one before it passed.
CONFIG ?= {name}.yaml
.PHONY: inspect baseline overfit regularize tune ensemble
inspect:    ; recipe inspect $(CONFIG)
baseline:   inspect ; recipe baseline $(CONFIG)
overfit:    baseline ; recipe overfit-batch $(CONFIG)
regularize: overfit ; recipe regularize $(CONFIG)
tune:       regularize ; recipe tune $(CONFIG) --random-search
ensemble:   tune ; recipe ensemble $(CONFIG)
"""
