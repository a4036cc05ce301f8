"""A final text model as `recipe ensemble` leaves it (runs/<name>/ensemble/ensemble.json, members/N.pt, best.pt and
a passing record; inspect/tokenizer.json beside it), trained here directly with the one loop on a small piece of
the pydoc topics, so predict and the report can be tested before the whole chain runs on text."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tests.text import corpus

# small enough to train in a few seconds on 2 busy cores, big enough that the loss falls well below ln V
LM_CONFIG = """\
name: {name}
seed: 0
task: {task}
data:
  source: {source}
  tokenizer: {tokenizer}
  block_size: 16
  chunk_chars: 600
{extra}  split: {{val: 0.2, test: 0.2}}
model:
  kind: gpt
  n_layer: 1
  n_head: 2
  n_embd: 32
train:
  optimizer: adamw
  lr: 3.0e-3
  batch_size: 32
  epochs: {epochs}
"""
TOPICS = ("assert", "atom-identifiers", "augassign", "bltin-null-object", "break", "calls", "continue",
          "del", "dict", "exprlists", "global", "if", "lambda", "pass", "raise", "return", "while")


def text_file(root: Path) -> Path:
    """~30k characters of the language reference in one .txt file (cut into 600-character documents)."""
    t = corpus.topics()
    return corpus.write_file(root / "topics.txt", {k: t[k] for k in TOPICS if k in t})


def labelled_csv(root: Path) -> Path:
    """Text classification on real text: 300-character pieces of two topics, labelled by topic."""
    import csv

    t = corpus.topics()
    path = root / "docs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "topic"])
        for topic in ("calls", "atom-identifiers"):
            body = t[topic]
            for i in range(0, len(body) - 300, 300):
                w.writerow([body[i:i + 300], topic])
    return path


def make(root: Path, name: str = "lm", task: str = "language-model", tokenizer: str = "char", epochs: int = 3,
         members: int = 1, fitted_on: tuple = ("train",), final: Optional[str] = None, inspect: bool = False,
         config_path: Optional[Path] = None):
    """Train `members` models (seeds 0, 1, ...) and save them as ensemble does; returns (config path, runs, ds).
    With `inspect`, `recipe inspect` runs first and writes tokenizer.json and its record (else it is saved here).
    `config_path`: an existing experiment instead of the small one written here (name and data from it)."""
    from recipe import config, models
    from recipe.data.text import build, save_tokenizer, split_documents
    from recipe.engine import train as E
    from recipe.stage import now
    from recipe.workspace import Workspace, config_read, file_digest

    root.mkdir(parents=True, exist_ok=True)
    cpath = config_path
    if cpath is None:
        if task == "language-model":
            source, extra = text_file(root), ""
        else:
            source, extra = labelled_csv(root), "  text: text\n  target: topic\n"
        cpath = root / f"{name}.yaml"
        cpath.write_text(LM_CONFIG.format(name=name, task=task, source=source.name, tokenizer=tokenizer, extra=extra,
                                          epochs=epochs))
    cfg = config.load(cpath, [])
    name = cfg.name
    runs = root / "runs"
    if inspect:
        from tests.conftest import invoke

        r = invoke("inspect", cpath, "--runs", runs, "-q")
        assert r.exit_code in (0, 1), r
    ds = build(cfg, *split_documents(cfg), fitted_on=fitted_on)
    tr, va = E.to_tensors(ds, ds.train, "cpu"), E.to_tensors(ds, ds.val, "cpu")
    ws = Workspace(runs, name)
    sdir = ws.stage_dir("ensemble")
    saved, vals = [], []
    for i in range(members):
        model = models.create(cfg, ds, i)
        E.fit_from_config(model, tr, va, cfg, ds, seed=i, num_classes=ds.num_outputs, metrics_path=sdir / "runs" / f"seed_{i}" / "metrics.jsonl")
        val = E.evaluate(model, va, ds.task, ds.num_outputs)["score"]
        rel = f"members/{i}.pt"
        (sdir / "members").mkdir(parents=True, exist_ok=True)
        E.save_checkpoint(sdir / rel, model, {"overrides": {}, "val": val, "name": f"seed {i}"})
        saved.append({"checkpoint": rel, "weight": 1.0 / members, "name": f"seed {i}", "source": "seed",
                      "overrides": {}, "val": val, "seed": i})
        vals.append(val)
        if i == 0:
            E.save_checkpoint(sdir / "best.pt", model, {"overrides": {}, "val": val, "name": "seed 0"})
    art = {"task": ds.task, "classes": ds.classes, "feature_names": ds.feature_names, "shape": list(ds.shape),
           "normalization": ds.norm, "encoding": ds.encoding, "target_stats": ds.target_stats,
           "target_column": cfg.data.target, "final": final or ("ensemble" if members > 1 else "best_single"),
           "method": "mean", "members": saved, "best_member": "seed 0",
           "best": {"checkpoint": "best.pt", "name": "seed 0", "overrides": {}, "val": vals[0]},
           "val": vals[0], "best_single_val": vals[0], "test_metric": "nats" if ds.task == "language-model" else "accuracy", "test": None,
           "test_ci95": [None, None], "data_fingerprint": ds.fingerprint}
    (sdir / "ensemble.json").write_text(json.dumps(art, default=str))
    if not inspect:
        idir = ws.stage_dir("inspect")
        idir.mkdir(parents=True, exist_ok=True)
        save_tokenizer(ds, idir / "tokenizer.json")
    files = ["ensemble.json", "best.pt"] + [s["checkpoint"] for s in saved]
    read = config_read("ensemble", cfg.model_dump(mode="json"))
    ws.write_record("ensemble", {"stage": "ensemble", "status": "passed", "finished": now(), "config": read,
                                 "data_fingerprint": ds.fingerprint, "checks": [],
                                 "artifacts": {f: file_digest(sdir / f) for f in files}})
    return cpath, runs, ds


def rewrite(runs: Path, name: str, **changes) -> dict:
    """ensemble.json with `changes` applied, and its record's artifact digests renewed (the record stays fresh)."""
    from recipe.workspace import Workspace, file_digest

    ws = Workspace(runs, name)
    path = ws.stage_dir("ensemble") / "ensemble.json"
    art = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(art, default=str))
    rec = ws.read_record("ensemble")
    rec["artifacts"]["ensemble.json"] = file_digest(path)
    ws.write_record("ensemble", rec)
    return art
