"""Run every stage on real public tables that ship inside PyPI packages (the test extras) and print, per table,
each stage's exit code and time and the final test score next to scikit-learn's best on the same split.

    .venv/bin/python scripts/real_tables.py [--tables penguins,computers] [--out runs/real]

Each table's config is configs/real/<name>.yaml, written by `recipe init DIR --data <name>.csv --target COL`
(tests/real/test_real_tables.py checks that init still proposes it). The split is recipe's own: the script
loads the config as the stages do and checks the data fingerprint against the inspect record, then fits
HistGradientBoosting and LogisticRegression/Ridge on train and scores them on test (accuracy / R², the
metric ensemble reports).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.real.tables import TABLES, copy_table  # noqa: E402

STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")


def prepare(name: str, out: Path) -> Path:
    """out/<name>/<name>.yaml beside out/<name>/<name>.csv, copied fresh from the package and configs/real."""
    work = out / name
    if work.exists():
        shutil.rmtree(work)
    copy_table(name, work)
    cfg = work / f"{name}.yaml"
    shutil.copyfile(ROOT / "configs" / "real" / f"{name}.yaml", cfg)
    return cfg


def run_stages(cfg: Path, runs: Path) -> list[dict]:
    recipe = str(Path(sys.executable).with_name("recipe"))
    rows = []
    for stage in STAGES:
        t0 = time.perf_counter()
        p = subprocess.run([recipe, stage, str(cfg), "--runs", str(runs), "--json"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "120"})
        rec_path = runs / cfg.stem / stage / "record.json"
        failed = []
        if rec_path.exists():
            rec = json.loads(rec_path.read_text())
            failed = [f"{c['id']}: {c['title']}" for c in rec["checks"] if c["status"] == "fail"]
            warned = [c["id"] for c in rec["checks"] if c["status"] == "warn"]
        else:
            warned = []
        rows.append({"stage": stage, "exit": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
                     "failed": failed, "warned": warned, "stderr_tail": p.stderr.strip().splitlines()[-1:]})
        if p.returncode not in (0, 1):     # a gate or input error: later stages would only refuse
            break
    return rows


def sklearn_scores(cfg_path: Path, runs: Path) -> dict:
    """HistGradientBoosting and a linear model on recipe's own train split, scored on its test split."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, r2_score

    from recipe.config import load as load_config
    from recipe.data import load

    cfg = load_config(cfg_path)
    ds = load(cfg)
    inspect = json.loads((runs / cfg.name / "inspect" / "record.json").read_text())
    if inspect["data_fingerprint"] != ds.fingerprint:
        raise SystemExit(f"{cfg_path}: data fingerprint differs from the inspect record: not the same split")
    test = ds.open_test("scripts/real_tables.py: scikit-learn reference scores")
    xtr, xte = ds.normalize(ds.train.x), ds.normalize(test.x)
    cls = ds.task == "classification"
    models = {"hist_gradient_boosting": (HistGradientBoostingClassifier if cls else HistGradientBoostingRegressor)(
        random_state=0), "logistic_regression" if cls else "ridge": LogisticRegression(max_iter=2000) if cls else Ridge()}
    out = {}
    for name, m in models.items():
        m.fit(np.nan_to_num(xtr), ds.train.y)
        pred = m.predict(np.nan_to_num(xte))
        out[name] = round(float(accuracy_score(test.y, pred) if cls else r2_score(test.y, pred)), 4)
    out["metric"] = "accuracy" if cls else "r2"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--out", default=str(ROOT / "runs" / "real"))
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    report = {}
    for name in args.tables.split(","):
        cfg = prepare(name, out)
        runs = out / name / "runs"
        t0 = time.perf_counter()
        stages = run_stages(cfg, runs)
        total = round(time.perf_counter() - t0, 1)
        ens = runs / name / "ensemble" / "record.json"
        final = json.loads(ens.read_text())["metrics"] if ens.exists() else {}
        ref = sklearn_scores(cfg, runs) if (runs / name / "inspect" / "record.json").exists() else {}
        report[name] = {"stages": stages, "total_seconds": total, "test": final.get("test"),
                        "test_ci95": final.get("test_ci95"), "final": final.get("final"), "sklearn": ref}
        t = TABLES[name]
        print(f"\n== {name} ({t.package}: {t.member}; {t.rows} rows, {t.task}, target {t.target}) in {total}s")
        for s in stages:
            extra = (f"  FAILED {'; '.join(s['failed'])}" if s["failed"] else "") + \
                (f"  warn: {', '.join(s['warned'])}" if s["warned"] else "")
            print(f"  {s['stage']:<14} exit {s['exit']}  {s['seconds']:>6.1f}s{extra}")
        sk = ", ".join(f"{k} {v}" for k, v in ref.items() if k != "metric")
        if final:
            ci = [round(v, 4) for v in final.get("test_ci95") or []]
            print(f"  recipe test {ref.get('metric', '')} {final['test']:.4f} {ci} (ships {final.get('final')})"
                  f"  |  scikit-learn test: {sk}")
        else:
            stopped = next((s["stage"] for s in stages if s["exit"] != 0), "?")
            print(f"  recipe: no test score (stopped at {stopped})  |  scikit-learn test {ref.get('metric', '')}: {sk}")
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(f"\nload average {open('/proc/loadavg').read().split()[:3]}; summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
