"""The table kind: rows of features from CSV/Parquet/NPZ files, sklearn builtins and `module:function`
sources; encoded with train-only levels, medians and normalization; the table data checks, pictures, report."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe.data import digests
from recipe.data.dataset import SPLITS, Dataset, Split
from recipe.data.features import encode_tables
from recipe.data.kinds import table_checks as T
from recipe.data.kinds.base import DataCheck, DataKind
from recipe.data.kinds.registry import register
from recipe.data.normalize import norm_stats
from recipe.data.sources import Table, read_source, small_pages
from recipe.data.splitting import split_indices, strat_key
from recipe.data.targets import _encode_target, _infer_task, real_valued
from recipe.errors import DataError

FINITE = ("data.non-finite", "the data holds NaN/inf")


def _images(look, th):
    from recipe.data.kinds.images import check_images

    return check_images(look.ds)


def _scale(look, th):
    from recipe.data.kinds.table_scale import check_scale

    return check_scale(look.ds, th, look.moments)


def _outliers(look, th):
    from recipe.data.kinds.table_outliers import check_outliers

    return check_outliers(look.ds, th)


def _signal(look, th):
    from recipe.data.kinds.table_probes import check_signal

    return check_signal(look.ds, th, look.seed)


def _label_noise(look, th):
    from recipe.data.kinds.table_probes import check_label_noise

    check, look.found["label_noise_suspects"] = check_label_noise(look.ds, th, look.seed)
    return check


@register
class TableKind(DataKind):
    name = "table"

    def claims(self, cfg) -> bool:
        return True     # the fallback: any source no other kind claims is read as a table

    # ------------------------------------------------------------------ read, split, encode, fingerprint

    def read(self, cfg, source: str) -> Table:
        return read_source(source, cfg.resolve, cfg.data.target, cfg.data.features)

    def split(self, cfg) -> dict[str, Table]:
        """The given train/val/test files, the missing ones split off train; or a seeded split of one source."""
        d = cfg.data
        if d.train is not None:
            tables = {"train": self.read(cfg, d.train)}
            for s in ("val", "test"):
                if getattr(d, s) is not None:
                    tables[s] = self.read(cfg, getattr(d, s))
            rest = [s for s in ("val", "test") if s not in tables]
            if rest:
                base = tables["train"]
                fr = {"val": d.split.val if "val" in rest else 0.0, "test": d.split.test if "test" in rest else 0.0}
                y = base.target if d.split.stratify and base.target is not None else None
                tr, va, te = split_indices(base.n_rows, strat_key(y), fr["val"], fr["test"], cfg.seed,
                                           d.split.stratify)
                tables["train"] = base.take(tr)
                tables["train"].extra["rows"] = tr
                for s, idx in (("val", va), ("test", te)):
                    if s in rest:
                        tables[s] = base.take(idx)
                        tables[s].extra = {**base.extra, "rows": idx}
            return tables
        base = self.read(cfg, d.source)
        if base.n_rows < 3:
            raise DataError(f"{base.origin}: {base.n_rows} row(s) cannot be split into train/val/test")
        # stratify by the labels where the task (named, or as the target implies it) has classes
        by_labels = d.split.stratify and base.target is not None and not real_valued(cfg.task or _infer_task(
            base.target if base.target.dtype != object else np.array(["a"], dtype=object)))
        strat = strat_key(base.target) if by_labels else None
        parts = split_indices(base.n_rows, strat, d.split.val, d.split.test, cfg.seed, d.split.stratify)
        tables = {}
        for s, idx in zip(SPLITS, parts):
            tables[s] = base.take(idx)
            tables[s].extra = {**base.extra, "rows": idx}
        return tables

    def load(self, cfg) -> Dataset:
        from concurrent.futures import ThreadPoolExecutor

        small_pages()
        # the source files are hashed on a side thread while this one reads and encodes: file reads and hashlib
        # release the GIL, and the CSV parser keeps about one core busy (recipe/data/digests.py)
        with ThreadPoolExecutor(1, thread_name_prefix="recipe-digest") as pool:
            early = digests.start(pool, digests.source_files(cfg))
            tables = self.split(cfg)
            for s, t in tables.items():
                if t.n_rows == 0:
                    raise DataError(f"{t.origin}: the {s} split is empty (data.split.{s} too small?)")
            files = pool.submit(digests.file_digests, tables, early)
            ds = self.encode(tables, cfg, pool)
            ds.files = files.result()
        ds.extra.pop("rows", None)
        return ds

    def encode(self, parts: dict[str, Table], cfg, pool=None) -> Dataset:
        """Class ids or real targets, float32 features, normalization: all learned from parts["train"]. With a
        `pool`, the fingerprint is hashed there while the train statistics are computed."""
        task, ys, classes = _encode_target(parts, cfg.task)
        xs, names, encoding = encode_tables(parts, cfg)
        if classes is not None:
            encoding["labels"] = classes
        for s in SPLITS:
            if len(ys[s]) < 2 and s != "test":
                raise DataError(f"{parts[s].origin}: the {s} split has {len(ys[s])} row(s); it needs at least 2")
        d = cfg.data
        shape = tuple(d.shape) if d.shape else (parts["train"].shape or (xs["train"].shape[1],))
        if int(np.prod(shape)) != xs["train"].shape[1]:
            raise DataError(f"data.shape {list(shape)} holds {int(np.prod(shape))} values per sample, "
                            f"but the data has {xs['train'].shape[1]} features")
        shape = tuple(int(v) for v in shape)
        splits = {s: Split(xs[s], ys[s], np.asarray(parts[s].extra.get("rows", np.arange(len(ys[s])))))
                  for s in SPLITS}
        meta = (task, names, classes, shape)
        content = pool.submit(digests.content_digest, splits, meta) if pool is not None else None
        target_stats: dict[str, float] = {}
        if classes is None:     # real targets: the network sees them standardized with train's mean and std
            ty = splits["train"].y.astype(np.float64)
            fin = ty[np.isfinite(ty)]
            target_stats = {"mean": float(fin.mean()) if fin.size else 0.0,
                            "std": float(fin.std()) if fin.size and fin.std() > 1e-12 else 1.0}
        norm = norm_stats(splits["train"].x, d.normalize, shape)
        ds = Dataset(
            task=task, feature_names=names, shape=shape, classes=classes,
            train=splits["train"], val=splits["val"], _test=splits["test"], norm=norm, target_stats=target_stats,
            encoding=encoding, files={}, origin=parts["train"].origin, extra=dict(parts["train"].extra),
            kind=self.name,
        )
        ds.fingerprint = content.result() if content is not None else self.fingerprint(ds)
        return ds

    def fingerprint(self, ds: Dataset) -> str:
        """Content hash of the loaded splits (features, targets, names, label mapping, shape)."""
        return digests.content_digest({"train": ds.train, "val": ds.val, "test": ds._test},
                                      (ds.task, ds.feature_names, ds.classes, ds.shape))

    # ------------------------------------------------------------------ what inspect runs and draws

    def checks(self) -> list[DataCheck]:
        # data.images stays in a table's list as a skip ("not image-shaped data"), as records always had it
        return [
            DataCheck("data.load", lambda look, th: T.check_load(look.ds)),
            DataCheck("data.non-finite", lambda look, th: T.check_non_finite(look.ds)),
            DataCheck("data.constant", lambda look, th: T.check_constant(look.ds, th)),
            DataCheck("data.duplicates", lambda look, th: T.check_duplicates(look.ds, th, look.hashes)),
            DataCheck("data.leak", lambda look, th: T.check_leak(look.ds, th, look.hashes)),
            DataCheck("data.label-conflict", lambda look, th: T.check_label_conflict(look.ds, th, look.hashes)),
            DataCheck("data.imbalance", lambda look, th: T.check_imbalance(look.ds, th)),
            DataCheck("data.split-shift", lambda look, th: T.check_split_shift(look.ds, th)),
            DataCheck("data.scale", _scale),
            DataCheck("data.order", lambda look, th: T.check_order(look.ds, th, look.cfg.train.batch_size)),
            DataCheck("data.size", lambda look, th: T.check_size(look.ds, th)),
            DataCheck("data.outliers", _outliers),
            DataCheck("data.signal", _signal, probe=True, needs=FINITE),
            DataCheck("data.label-noise", _label_noise, probe=True, needs=FINITE),
            DataCheck("data.images", _images),
        ]

    def pictures(self, look) -> list[str]:
        """class_balance.png (or target.png), then the kind's sample pictures, then features.png."""
        from recipe.data.kinds.table_pictures import feature_histograms, target_picture

        return target_picture(look) + self.sample_pictures(look) + feature_histograms(look)

    def sample_pictures(self, look) -> list[str]:
        """Pictures of a few samples as they are (images draw them); a table has none."""
        return []

    def report(self, look) -> dict[str, Any]:
        """What later stages read: priors / target stats, train feature stats, sizes, fingerprint."""
        ds = look.ds
        mean, std = look.moments
        report: dict[str, Any] = {
            "fingerprint": ds.fingerprint, "task": ds.task, "shape": list(ds.shape),
            "rows": {"train": len(ds.train.y), "val": len(ds.val.y), "test": len(ds.raw_test().y)},
            "feature_names": ds.feature_names, "classes": ds.classes, "normalization": ds.norm,
            "train_feature_mean": np.nan_to_num(mean).tolist(), "train_feature_std": np.nan_to_num(std).tolist(),
            "encoding": ds.encoding,
        }
        if "loading" in ds.extra:       # in memory or streamed (recipe/data/streaming.py); the record has the why
            # not the budget: by default it follows the free RAM, and an artifact must not change on a rerun
            report["loading"] = {k: ds.extra["loading"][k] for k in ("mode", "estimate", "rows", "features")}
        if look.ds.has_classes:
            report["class_priors"] = ds.class_priors()
            report["class_counts"] = T.label_counts(ds)
        else:
            report["target_mean"], report["target_std"] = ds.target_stats["mean"], ds.target_stats["std"]
        return report

    def outcome(self, look, report) -> tuple[dict[str, Any], str]:
        ds, sizes = look.ds, report["rows"]
        summary = (f"{sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test rows, {ds.num_features} "
                   f"features, {ds.task}" + (f", {ds.num_classes} classes" if ds.classes else ""))
        return {"rows": sizes, "features": ds.num_features}, summary
