"""Streamed splits for the one training loop: a torch IterableDataset over Parquet row groups (worker processes,
prefetch, pinned memory on CUDA only), normalized and encoded as the in-memory path does it, and whole-split
evaluation summed batch by batch. train.Single asks a split for `batches`; a streamed split yields them from
disk where an in-memory one indexes its device tensors."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recipe.errors import RecipeError

SHUFFLE_GROUPS = 4       # row groups mixed in one shuffle buffer: batches draw from several parts of the file


def workers() -> int:
    """DataLoader worker processes: one per spare core, at most 4 (decoding Parquet is cheap next to training)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class RowGroups(IterableDataset):
    """Batches of one split, read a row group at a time: the row groups in a seeded order per epoch, dealt
    round-robin to the workers; rows shuffled within a buffer of SHUFFLE_GROUPS groups."""

    def __init__(self, ds, split: str, batch_size: int, shuffle: bool, seed: int):
        from recipe.data.stream_table import CODE

        self.code, self.bs, self.shuffle, self.seed, self.epoch = CODE[split], batch_size, shuffle, seed, 0
        self.columns, self.target = list(ds.columns), ds.target_name
        self.pieces = [(i, p) for i, src in enumerate(ds.sources) for p in src.pieces]
        self.codes = [src.codes for src in ds.sources]
        self.task = ds.task_object
        self.target_stats = ds.target_stats
        self.index = None if ds.classes is None else _label_index(ds.classes)
        self.norm = ds.norm
        self.shift = np.asarray(ds.norm.get("shift", 0.0), np.float32)
        self.scale = np.asarray(ds.norm.get("scale", 1.0), np.float32)

    def _encode(self, raw: np.ndarray) -> np.ndarray:
        if self.index is None:
            return self.task.network_target(raw.astype(np.float32), self.target_stats)
        keys = raw.astype(str) if raw.dtype == object else raw
        return np.asarray([self.index[k] for k in keys.tolist()], np.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from recipe.data.stream_table import read_piece

        info = get_worker_info()
        w, k = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.pieces)).tolist() if self.shuffle else list(range(len(self.pieces)))
        cache: dict = {}
        held: list[tuple[np.ndarray, np.ndarray]] = []      # row groups read, not yet batched
        self.emitted = 0
        for src, piece in (self.pieces[i] for i in order[w::k]):
            keep = self.codes[src][piece.start:piece.start + piece.rows] == self.code
            if not keep.any():
                continue
            x, raw = read_piece(piece, self.columns, self.target, cache)
            x = x[keep]
            if self.norm["kind"] != "none":
                x = (x - self.shift) / self.scale
            held.append((x.astype(np.float32, copy=False), self._encode(raw[keep])))
            if len(held) > (SHUFFLE_GROUPS if self.shuffle else 0):     # in order: batch each group as read
                held = yield from self._batches(held, rng, last=False)
        yield from self._batches(held, rng, last=True)

    def _batches(self, held, rng, last: bool):
        """Full batches from the held rows (shuffled together); the rest is held for the next buffer, or at the
        end is one last batch (a 1-sample tail is dropped as train.Single drops it)."""
        if not held:
            return []
        x, y = np.concatenate([h[0] for h in held]), np.concatenate([h[1] for h in held])
        if self.shuffle:
            p = rng.permutation(len(y))
            x, y = x[p], y[p]
        end = len(y) if last else len(y) // self.bs * self.bs
        for i in range(0, end, self.bs):
            xb, yb = x[i:i + self.bs], y[i:i + self.bs]
            if len(yb) < 2 and self.emitted:
                continue
            self.emitted += 1
            yield torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(np.ascontiguousarray(yb))
        return [] if last or end == len(y) else [(x[end:], y[end:])]


def _label_index(classes) -> dict:
    """Raw label -> class id, as recipe/data/targets.py maps them (text labels compared as str)."""
    return {c: i for i, c in enumerate(classes)} | {str(c): i for i, c in enumerate(classes)}


class StreamSplit:
    """A streamed split in the engine: what train.Single and evaluate need (len, device, batches, evaluate);
    its features are never held whole, so `x` and `subset` are refused by name."""

    streamed = True

    def __init__(self, ds, split: str, device: torch.device, seed: int = 0, num_workers: Optional[int] = None):
        self.ds, self.split, self.device, self.seed = ds, split, device, seed
        self.n = len(getattr(ds, split).y)
        self.num_workers = workers() if num_workers is None else num_workers
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    @property
    def x(self):
        return getattr(self.ds, self.split).x        # raises: the feature matrix is not in memory

    def subset(self, idx):
        raise RecipeError(f"the {self.split} split is streamed from disk (over data.memory_budget): a subset of "
                          "its rows in memory is not available; raise data.memory_budget for this stage")

    def loader(self, batch_size: int, shuffle: bool, epoch: int = 0) -> DataLoader:
        data = RowGroups(self.ds, self.split, batch_size, shuffle, self.seed)
        data.epoch = epoch
        extra: dict[str, Any] = {"prefetch_factor": 2} if self.num_workers else {}
        return DataLoader(data, batch_size=None, num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda", **extra)

    def sample(self, rows: int = 2) -> torch.Tensor:
        """The first rows of the split, normalized, on the device (what the thread sizing measures with)."""
        xb, _ = next(iter(RowGroups(self.ds, self.split, rows, False, self.seed)))
        return xb.to(self.device)

    def batches(self, batch_size: int, gen=None, share=None) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """One shuffled epoch of (x, y, rows) device batches; each call is the next epoch's order. A streamed
        split trains in one process (`share`, DDP's per-rank rows, is refused)."""
        if share is not None:
            from recipe.errors import RecipeError

            raise RecipeError("train.devices > 1 on streamed data (above data.memory_budget) is not supported: "
                              "train on one device or raise data.memory_budget")
        self.epoch += 1
        blocking = self.device.type != "cuda"
        for xb, yb in self.loader(batch_size, True, self.epoch):
            yield (xb.to(self.device, non_blocking=not blocking), yb.to(self.device, non_blocking=not blocking),
                   len(yb))

    @torch.no_grad()
    def evaluate(self, model, task: str, num_classes: int = 0, train_mode: bool = False,
                 precision: str = "auto", batch_size: int = 4096) -> dict[str, Any]:
        """The task's whole-split metrics (tasks' `score`), summed over batches so no (N, C) output is held."""
        from recipe.engine.hardware import _autocast

        was = model.training
        model.train(train_mode)
        acc = _Totals(task, num_classes)
        try:
            for xb, yb in self.loader(batch_size, False):
                xb, yb = xb.to(self.device), yb.to(self.device)
                ac = _autocast(self.device, precision)
                with ac if ac is not None else contextlib.nullcontext():
                    out = model(xb).float()
                acc.add(out, yb)
        finally:
            model.train(was)
        return acc.result()


class _Totals:
    """Sums that give the task's score exactly as tasks/*.py compute it on a whole split."""

    def __init__(self, task: str, num_classes: int):
        if task not in ("classification", "regression"):
            raise RecipeError(f"task {task}: streamed evaluation covers classification and regression tables")
        self.task, self.k = task, num_classes
        self.n, self.loss, self.right = 0, 0.0, 0.0
        self.total = torch.zeros(max(num_classes, 1), dtype=torch.float64)
        self.hits = torch.zeros(max(num_classes, 1), dtype=torch.float64)
        self.sy = self.syy = 0.0

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        import torch.nn.functional as F

        self.n += len(y)
        if self.task == "classification":
            self.loss += float(F.cross_entropy(out, y, reduction="sum"))
            pred = out.argmax(1)
            hit = pred == y
            self.right += float(hit.sum())
            k = max(self.k, int(y.max()) + 1, len(self.total))
            if k > len(self.total):
                self.total = torch.cat([self.total, torch.zeros(k - len(self.total), dtype=torch.float64)])
                self.hits = torch.cat([self.hits, torch.zeros(k - len(self.hits), dtype=torch.float64)])
            self.total += torch.bincount(y, minlength=k).cpu().double()
            self.hits += torch.bincount(y[hit], minlength=k).cpu().double()
        else:
            out = out[:, 0] if out.ndim == 2 else out
            self.loss += float(((out - y) ** 2).double().sum())
            self.sy += float(y.double().sum())
            self.syy += float((y.double() ** 2).sum())

    def result(self) -> dict[str, Any]:
        n = max(self.n, 1)
        if self.task == "classification":
            acc = self.right / n
            per = torch.where(self.total > 0, self.hits / self.total.clamp_min(1),
                              torch.full_like(self.total, float("nan"))).tolist()
            return {"loss": self.loss / n, "score": acc, "accuracy": acc,
                    "per_class": per[:self.k] if self.k else per}
        mse = self.loss / n
        var = self.syy / n - (self.sy / n) ** 2
        r2 = 1.0 - mse / var if var > 0 else float("nan")
        return {"loss": mse, "score": r2, "r2": r2, "mse_std_units": mse}
