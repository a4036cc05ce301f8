"""The bug zoo: each planted PyTorch bug from tests/bugs/models/zoo.py run through `recipe baseline` on
digits; prints bug -> expected check -> caught? -> status -> seconds, and the detection rate.

    python scripts/bug_zoo.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typer.testing import CliRunner  # noqa: E402

from recipe.cli import app  # noqa: E402
from tests.bugs.models.zoo import ZOO, ZOO_ERRORS  # noqa: E402

CONFIG = """\
name: zoo
seed: 0
data: {{source: builtin:digits}}
model: {{kind: {kind}}}
train: {{lr: {lr}, batch_size: 64, epochs: 5}}
"""
EXTRA = {"lr=10 (adam)": ("mlp", 10.0, ("health.non-finite", "health.exploding"))}


def main() -> None:
    runner = CliRunner()
    rows, caught = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = tmp / "runs"
        cfg = tmp / "zoo.yaml"
        cfg.write_text(CONFIG.format(kind="mlp", lr=1e-3))
        runner.invoke(app, ["inspect", str(cfg), "--runs", str(runs), "-q"])
        cases = [(f, f'"tests.bugs.models.zoo:{f}"', 1e-3, ids, 1) for f, (ids, _) in ZOO.items()]
        cases += [(f, f'"tests.bugs.models.zoo:{f}"', 1e-3, ("exit 2",), 2) for f in ZOO_ERRORS]
        cases += [(name, kind, lr, ids, 1) for name, (kind, lr, ids) in EXTRA.items()]
        for name, kind, lr, ids, want in cases:
            cfg.write_text(CONFIG.format(kind=kind, lr=lr))
            start = time.perf_counter()
            r = runner.invoke(app, ["baseline", str(cfg), "--runs", str(runs), "--force", "-q", "--json"])
            seconds = time.perf_counter() - start
            if want == 2:
                ok = r.exit_code == 2
                status = f"exit {r.exit_code}"
            else:
                checks = json.loads(r.stdout.strip().splitlines()[-1]).get("checks", []) if r.stdout.strip() else []
                hit = [c for c in checks if c["id"] in ids and c["status"] == "fail"]
                ok = r.exit_code == 1 and bool(hit)
                status = f"exit {r.exit_code}, " + (f"{hit[0]['id']} fail" if hit else "not caught")
            caught += ok
            rows.append((name, " | ".join(ids), "yes" if ok else "NO", status, seconds))
    w = max(len(r[0]) for r in rows)
    print(f"{'bug':<{w}}  {'expected check':<44} caught  {'status':<36} seconds")
    for name, ids, ok, status, s in rows:
        print(f"{name:<{w}}  {ids:<44} {ok:<7} {status:<36} {s:6.1f}")
    print(f"detection rate: {caught}/{len(rows)} = {caught / len(rows):.0%}")


if __name__ == "__main__":
    main()
