"""Load an experiment's data: read, split, encode (train-only statistics), fingerprint, seal test."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from recipe.data import digests, seen
from recipe.data.hashing import column_moments
from recipe.data.sources import Table, read_source, small_pages
from recipe.errors import DataError, RecipeError

SPLITS = ("train", "val", "test")


class SealedTestError(RecipeError):
    """Raised when a stage other than ensemble reaches for the test split."""


@dataclass
class Split:
    x: np.ndarray        # (N, D) float32, raw (encoded but not normalized)
    y: np.ndarray        # (N,) int64 class index, or float32 target
    rows: np.ndarray     # row numbers in the source (for evidence)


@dataclass
class Dataset:
    task: str
    feature_names: list[str]
    shape: tuple[int, ...]
    classes: Optional[list[Any]]          # original label values, index = class id
    train: Split
    val: Split
    _test: Split
    norm: dict[str, Any]                  # {"kind", "shift": [...], "scale": [...]} from train only
    target_stats: dict[str, float]        # regression: train mean/std of the target
    encoding: dict[str, Any]              # one-hot levels, imputed values, unseen levels, label mapping
    files: dict[str, str]                 # file -> digest, for the gate
    origin: str
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    test_opened: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    @property
    def num_features(self) -> int:
        return self.train.x.shape[1]

    def open_test(self, reason: str) -> Split:
        """The sealed test split: only the ensemble stage calls this, once per record."""
        self.test_opened = True
        self.extra.setdefault("test_opened_for", []).append(reason)
        return self._test

    def raw_test(self) -> Split:
        """Test rows for data checks only (NaN, leaks, label counts); no model ever sees them here."""
        return self._test

    @property
    def test(self) -> Split:
        raise SealedTestError("the test split is sealed: only 'recipe ensemble' evaluates it")

    def test_summary(self) -> dict[str, Any]:
        """What inspect may know of test without evaluating anything on it: size, labels, row hashes."""
        from recipe.data.hashing import row_hashes

        t = self._test
        summary = {"n": len(t.y), "row_hashes": row_hashes(t.x), "non_finite_rows": int((~np.isfinite(t.x)).any(1).sum())}
        if self.task == "classification":
            summary["label_counts"] = np.bincount(t.y, minlength=self.num_classes).tolist()
        return summary

    def normalize(self, x: np.ndarray) -> np.ndarray:
        if self.norm["kind"] == "none":
            return x.astype(np.float32, copy=False)
        shift = np.asarray(self.norm["shift"], dtype=np.float32)
        scale = np.asarray(self.norm["scale"], dtype=np.float32)
        return ((x - shift) / scale).astype(np.float32, copy=False)

    def target(self, y: np.ndarray) -> np.ndarray:
        """Targets as the network sees them: class ids, or standardized regression values."""
        if self.task == "classification":
            return y.astype(np.int64, copy=False)
        return ((y - self.target_stats["mean"]) / self.target_stats["std"]).astype(np.float32)

    def class_priors(self) -> Optional[list[float]]:
        if self.task != "classification":
            return None
        counts = np.bincount(self.train.y, minlength=self.num_classes).astype(float)
        return (counts / counts.sum()).tolist()


# ----------------------------------------------------------------------------- splitting


def split_indices(n: int, y: Optional[np.ndarray], val: float, test: float, seed: int,
                  stratify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (stratified) split of range(n) into train/val/test index arrays."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if stratify and y is not None:
        _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        # a stable sort lists each class's rows in ascending order: the same groups as flatnonzero(inverse == k)
        groups = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for g in groups:
        g = rng.permutation(g)
        n_test = int(round(len(g) * test))
        n_val = int(round(len(g) * val))
        parts["test"].append(g[:n_test])
        parts["val"].append(g[n_test:n_test + n_val])
        parts["train"].append(g[n_test + n_val:])
    return tuple(np.sort(np.concatenate(parts[s])).astype(np.int64) for s in SPLITS)  # type: ignore


# ----------------------------------------------------------------------------- encoding


def _infer_task(y: np.ndarray) -> str:
    if y.dtype == object or y.dtype == bool or np.issubdtype(y.dtype, np.str_):
        return "classification"
    finite = y if np.issubdtype(y.dtype, np.integer) else y[np.isfinite(y.astype(float))]
    if finite.size and np.all(np.mod(finite, 1) == 0):
        distinct = len(np.unique(finite))
        if distinct <= max(20, int(np.sqrt(len(y)) / 2)) and (np.issubdtype(y.dtype, np.integer) or distinct <= 20):
            return "classification"
    return "regression"


def _is_missing(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in a], dtype=bool)
    return np.isnan(a.astype(float))


def _encode_tables(tables: dict[str, Table], cfg) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """Turn each split's columns into a float32 matrix with levels/medians from train only."""
    train = tables["train"]
    if train.matrix is not None and train.names is not None:
        return _encode_numeric(tables, cfg)
    if train.matrix is not None:
        return {s: t.matrix for s, t in tables.items()}, [f"x{i}" for i in range(train.matrix.shape[1])], {}
    names, blocks, encoding = [], {s: [] for s in tables}, {"categorical": {}, "imputed": {}, "unseen": {}}
    facts: dict[str, dict] = {}     # what train showed of each column, for predict's warnings (recipe.data.seen)
    encoding["seen"] = seen.seen_block(facts)
    for col, values in train.columns.items():
        if values.dtype == object:
            present = [v for v in values if v is not None]
            if present and all(isinstance(v, str) for v in present):
                numeric = _try_numeric(values)
            else:
                numeric = None
            if numeric is None:
                _refuse_mostly_numeric(train.origin, col, present)
                levels = sorted({str(v) for v in present})
                if len(levels) > cfg.data.max_categories:
                    raise DataError(
                        f"{train.origin}: column '{col}' has {len(levels)} distinct text values, more than "
                        f"data.max_categories={cfg.data.max_categories}; drop it with data.features or encode it"
                    )
                fill = None
                if cfg.data.missing == "impute" and not present:
                    raise _nothing_to_impute(train.origin, col)
                if cfg.data.missing == "impute" and present:
                    vals, counts = np.unique([str(v) for v in present], return_counts=True)
                    fill = str(vals[counts.argmax()])
                    encoding["imputed"][col] = fill
                encoding["categorical"][col] = levels
                facts[col] = seen.record_levels(values)
                for s, t in tables.items():
                    block, unseen = _one_hot(t.columns[col], levels, fill)
                    blocks[s].append(block)
                    if unseen and s != "train":
                        encoding["unseen"][f"{s}:{col}"] = unseen
                names += [f"{col}={lv}" for lv in levels]
                continue
            for t in tables.values():
                t.columns[col] = _try_numeric(t.columns[col], origin=t.origin, col=col)
        names.append(col)
        facts[col] = seen.record_numeric(train.columns[col].astype(np.float32))   # the values the model sees
        fill = None
        if cfg.data.missing == "impute":
            tr = train.columns[col].astype(np.float64)
            finite = tr[np.isfinite(tr)]
            if not finite.size:
                raise _nothing_to_impute(train.origin, col)
            fill = float(np.median(finite))
            encoding["imputed"][col] = fill
        for s, t in tables.items():
            v = t.columns[col].astype(np.float32)
            if fill is not None:
                v = np.where(np.isnan(v), np.float32(fill), v)
            blocks[s].append(v[:, None])
    out = {s: _assemble(b, tables[s].n_rows) for s, b in blocks.items()}
    return out, names, encoding


def _encode_numeric(tables: dict[str, Table], cfg) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """A table whose features are all numbers arrives as one float32 matrix per split: only imputation is
    left to do (train medians, as for separate columns)."""
    train = tables["train"]
    names = list(train.names)
    encoding: dict[str, Any] = {"categorical": {}, "imputed": {}, "unseen": {}}
    xs = {s: t.matrix for s, t in tables.items()}
    encoding["seen"] = seen.seen_block({col: seen.record_numeric(train.matrix[:, j]) for j, col in enumerate(names)})
    if cfg.data.missing != "impute":
        return xs, names, encoding
    fills = np.empty(len(names), np.float32)
    for j, col in enumerate(names):
        v = train.matrix[:, j]
        finite = v[np.isfinite(v)].astype(np.float64)
        if not finite.size:
            raise _nothing_to_impute(train.origin, col)
        fills[j] = np.median(finite)
        encoding["imputed"][col] = float(str(fills[j]))   # the value written, as its shortest decimal
    for x in xs.values():   # each split's matrix is its own (rows taken from the file's): fill in place
        np.copyto(x, fills, where=np.isnan(x))
    return xs, names, encoding


def _assemble(blocks: list[np.ndarray], n: int, rows: int = 8192) -> np.ndarray:
    """Columns side by side as one float32 (n, d) matrix, a block of rows at a time: 5x faster than one
    concatenate, which writes each column across the whole matrix."""
    out = np.empty((n, sum(b.shape[1] for b in blocks)), np.float32)
    if out.shape[1]:
        for i in range(0, n, rows):
            out[i:i + rows] = np.concatenate([b[i:i + rows] for b in blocks], axis=1)
    return out


def _refuse_mostly_numeric(origin: str, col: str, present: list) -> None:
    """A numeric column with a few text cells ('unknown', '?') is a typo or a missing marker, not a category."""
    text = []
    for v in present:
        try:
            float(v)
        except (TypeError, ValueError):
            text.append(v)
    if present and len(text) <= 0.1 * len(present):
        examples = ", ".join(repr(v) for v in sorted(set(map(str, text)))[:3])
        raise DataError(f"{origin}: column '{col}' mixes numbers and text ({len(text)} text cell(s): {examples}); "
                        "write missing values as empty or NA, or drop the column with data.features")


def _nothing_to_impute(origin: str, col: str) -> DataError:
    return DataError(f"{origin}: column '{col}' has no value in the train split, so there is nothing to impute "
                     "from (data.missing: impute); drop it with data.features")


def _try_numeric(values: np.ndarray, origin: str = "", col: str = "") -> Optional[np.ndarray]:
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        if origin:
            raise DataError(f"{origin}: column '{col}' mixes numbers and text") from None
        return None


def _one_hot(values: np.ndarray, levels: list[str], fill: Optional[str]) -> tuple[np.ndarray, int]:
    index = {lv: i for i, lv in enumerate(levels)}
    out = np.zeros((len(values), len(levels)), np.float32)
    unseen = 0
    for r, v in enumerate(values):
        if v is None and fill is not None:
            v = fill
        if v is None:
            out[r, :] = np.nan   # data.non-finite reports it (data.missing: fail)
            continue
        i = index.get(str(v))
        if i is None:
            unseen += 1
        else:
            out[r, i] = 1.0
    return out, unseen


def _encode_target(tables: dict[str, Table], task: Optional[str]) -> tuple[str, dict[str, np.ndarray], Optional[list]]:
    ys = {s: t.target for s, t in tables.items()}
    train_y = ys["train"]
    task = task or _infer_task(np.concatenate([np.asarray(y) for y in ys.values()]) if train_y.dtype != object
                               else train_y)
    if task == "regression":
        out = {}
        for s, y in ys.items():
            try:
                out[s] = np.array([np.nan if v is None else float(v) for v in y], dtype=np.float32) \
                    if y.dtype == object else y.astype(np.float32)
            except (TypeError, ValueError):
                raise DataError(f"{tables[s].origin}: target '{tables[s].target_name}' is not numeric; "
                                "set task: classification") from None
        return task, out, None
    by_file: dict[str, list[tuple[str, np.ndarray]]] = {}    # one file may hold every split: count over all of it
    for s, y in ys.items():
        miss = _is_missing(y) if y.dtype == object or np.issubdtype(y.dtype, np.floating) else np.zeros(len(y), bool)
        if miss.any():
            by_file.setdefault(str(tables[s].origin), []).append((s, np.flatnonzero(miss)))
    for origin, found in by_file.items():
        total = sum(len(rows) for _, rows in found)
        where = ", ".join(f"{len(rows)} in {s} (rows {rows[:5].tolist()})" for s, rows in found)
        s = found[0][0]
        raise DataError(f"{origin}: target column '{tables[s].target_name}' has {total} missing labels ({where}); "
                        "drop those rows")
    if train_y.dtype != object and all(y.dtype != object for y in ys.values()):
        return task, *_class_ids(tables, ys)
    as_key = (lambda y: np.array([str(v) for v in y], dtype=object)) if train_y.dtype == object else (lambda y: y)
    classes = sorted(set(as_key(train_y).tolist()), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(f"{tables['train'].origin}: target '{tables['train'].target_name}' has a single class "
                        f"({classes[0] if classes else 'none'}) in train; classification needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for s, y in ys.items():
        keys = as_key(y).tolist()
        unseen = sorted({k for k in keys if k not in index}, key=str)
        if unseen:
            raise DataError(f"{tables[s].origin}: label(s) {unseen[:5]} appear in the {s} split but never in train; "
                            "the model cannot learn them (fix the split or drop those rows)")
        out[s] = np.array([index[k] for k in keys], dtype=np.int64)
    plain = [c.item() if hasattr(c, "item") else c for c in classes]
    return task, out, plain


def _class_ids(tables: dict[str, Table], ys: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
    """Numeric labels: classes are train's distinct values in order, ids found by binary search."""
    classes = np.unique(ys["train"])
    if len(classes) < 2:
        raise DataError(f"{tables['train'].origin}: target '{tables['train'].target_name}' has a single class "
                        f"({classes[0] if len(classes) else 'none'}) in train; classification needs two or more")
    out = {}
    for s, y in ys.items():
        ids = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
        unseen = classes[ids] != y
        if unseen.any():
            raise DataError(f"{tables[s].origin}: label(s) {np.unique(y[unseen])[:5].tolist()} appear in the {s} "
                            "split but never in train; the model cannot learn them (fix the split or drop those rows)")
        out[s] = ids.astype(np.int64)
    return out, classes.tolist()


def norm_stats(x: np.ndarray, kind: str, shape: tuple = ()) -> dict[str, Any]:
    """Normalization statistics from `x` (the train split): per feature, or per channel for images
    (data.shape [C, H, W]), so that shifting an image does not mix statistics of different pixels."""
    if kind == "none" or x.shape[1] == 0:
        return {"kind": "none"}
    per_channel = len(shape) == 3
    v = x
    if per_channel:
        c = shape[0]
        v = v.reshape(len(x), c, -1).transpose(1, 0, 2).reshape(c, -1).T   # (N*H*W, C)
    with np.errstate(invalid="ignore"):
        if kind == "standard":
            shift, scale = column_moments(v)
        elif np.isfinite(v).all():   # the common case: one pass each, no copies
            shift = v.min(axis=0).astype(np.float64)
            scale = v.max(axis=0).astype(np.float64) - shift
        else:
            v = np.where(np.isfinite(v), v.astype(np.float64), np.nan)
            shift = np.nanmin(v, axis=0)
            scale = np.nanmax(v, axis=0) - shift
    shift = np.where(np.isfinite(shift), shift, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    if per_channel:
        per = int(np.prod(shape[1:]))
        shift, scale = np.repeat(shift, per), np.repeat(scale, per)
    return {"kind": kind, "per": "channel" if per_channel else "feature", "shift": shift.tolist(), "scale": scale.tolist()}


# ----------------------------------------------------------------------------- load


def _read(cfg, spec: str) -> Table:
    return read_source(spec, cfg.resolve, cfg.data.target, cfg.data.features)


def _tables(cfg) -> dict[str, Table]:
    d = cfg.data
    if d.train is not None:
        tables = {"train": _read(cfg, d.train)}
        for s in ("val", "test"):
            if getattr(d, s) is not None:
                tables[s] = _read(cfg, getattr(d, s))
        rest = [s for s in ("val", "test") if s not in tables]
        if rest:
            base = tables["train"]
            fr = {"val": d.split.val if "val" in rest else 0.0, "test": d.split.test if "test" in rest else 0.0}
            y = base.target if d.split.stratify and base.target is not None else None
            tr, va, te = split_indices(base.n_rows, _strat_key(y), fr["val"], fr["test"], cfg.seed, d.split.stratify)
            tables["train"] = base.take(tr)
            tables["train"].extra["rows"] = tr
            for s, idx in (("val", va), ("test", te)):
                if s in rest:
                    tables[s] = base.take(idx)
                    tables[s].extra = {**base.extra, "rows": idx}
        return tables
    base = _read(cfg, d.source)
    if base.n_rows < 3:
        raise DataError(f"{base.origin}: {base.n_rows} row(s) cannot be split into train/val/test")
    task_hint = cfg.task or ("classification" if base.target is not None and _infer_task(
        base.target if base.target.dtype != object else np.array(["a"], dtype=object)) == "classification"
        else "regression")
    strat = _strat_key(base.target) if d.split.stratify and task_hint == "classification" else None
    parts = split_indices(base.n_rows, strat, d.split.val, d.split.test, cfg.seed, d.split.stratify)
    tables = {}
    for s, idx in zip(SPLITS, parts):
        tables[s] = base.take(idx)
        tables[s].extra = {**base.extra, "rows": idx}
    return tables


def _strat_key(y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if y is None:
        return None
    return np.array([str(v) for v in y], dtype=object) if y.dtype == object else y


def load(cfg) -> Dataset:
    """Load, split, encode and fingerprint the experiment's data; test is sealed inside."""
    from concurrent.futures import ThreadPoolExecutor

    small_pages()
    # the source files are hashed on a side thread while this one reads and encodes: file reads and hashlib
    # release the GIL, and the CSV parser keeps about one core busy (recipe/data/digests.py)
    with ThreadPoolExecutor(1, thread_name_prefix="recipe-digest") as pool:
        early = digests.start(pool, digests.source_files(cfg))
        tables = _tables(cfg)
        for s, t in tables.items():
            if t.n_rows == 0:
                raise DataError(f"{t.origin}: the {s} split is empty (data.split.{s} too small?)")
        files = pool.submit(digests.file_digests, tables, early)
        task, ys, classes = _encode_target(tables, cfg.task)
        xs, names, encoding = _encode_tables(tables, cfg)
        if classes is not None:
            encoding["labels"] = classes
        for s in SPLITS:
            if len(ys[s]) < 2 and s != "test":
                raise DataError(f"{tables[s].origin}: the {s} split has {len(ys[s])} row(s); it needs at least 2")
        d = cfg.data
        shape = tuple(d.shape) if d.shape else (tables["train"].shape or (xs["train"].shape[1],))
        if int(np.prod(shape)) != xs["train"].shape[1]:
            raise DataError(f"data.shape {list(shape)} holds {int(np.prod(shape))} values per sample, "
                            f"but the data has {xs['train'].shape[1]} features")
        shape = tuple(int(v) for v in shape)
        splits = {s: Split(xs[s], ys[s], np.asarray(tables[s].extra.get("rows", np.arange(len(ys[s])))))
                  for s in SPLITS}
        content = pool.submit(digests.content_digest, splits, (task, names, classes, shape))
        target_stats: dict[str, float] = {}
        if task == "regression":
            ty = splits["train"].y.astype(np.float64)
            fin = ty[np.isfinite(ty)]
            target_stats = {"mean": float(fin.mean()) if fin.size else 0.0,
                            "std": float(fin.std()) if fin.size and fin.std() > 1e-12 else 1.0}
        norm = norm_stats(splits["train"].x, d.normalize, shape)
        ds = Dataset(
            task=task, feature_names=names, shape=shape, classes=classes,
            train=splits["train"], val=splits["val"], _test=splits["test"], norm=norm, target_stats=target_stats,
            encoding=encoding, files=files.result(), origin=tables["train"].origin, extra=dict(tables["train"].extra),
        )
        ds.fingerprint = content.result()
    ds.extra.pop("rows", None)
    return ds


def fingerprint(ds: Dataset) -> str:
    """Content hash of the loaded splits (features, targets, names, label mapping)."""
    return digests.content_digest({"train": ds.train, "val": ds.val, "test": ds._test},
                                  (ds.task, ds.feature_names, ds.classes, ds.shape))
