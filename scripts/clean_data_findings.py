"""What data.outliers and data.scale find on sklearn's bundled sets (clean real data): the numbers behind
their thresholds. Run: .venv/bin/python scripts/clean_data_findings.py"""
from __future__ import annotations

import tempfile
from pathlib import Path

from recipe import checks as C
from recipe.config import load
from recipe.data import load as load_data
from recipe.data.hashing import column_moments
from recipe.data.kinds.table_outliers import check_outliers
from recipe.data.kinds.table_scale import check_scale

SETS = [("iris", "standard"), ("wine", "standard"), ("breast_cancer", "standard"), ("digits", "standard"),
        ("diabetes", "standard"), ("diabetes", "none"), ("wine", "none"), ("digits", "minmax")]


def main() -> None:
    for name, norm in SETS:
        path = Path(tempfile.mkdtemp()) / "c.yaml"
        task = "task: regression\n" if name == "diabetes" else ""
        path.write_text(f"name: x\n{task}data: {{source: 'builtin:{name}', normalize: {norm}}}\n")
        ds = load_data(load(path))
        out = check_outliers(ds, C.thresholds("data.outliers"))
        scale = check_scale(ds, C.thresholds("data.scale"), column_moments(ds.train.x))
        found = scale.evidence.get("prescaled")
        print(f"{name:14s} normalize={norm:8s} data.outliers {out.status:4s} fraction {out.evidence['fraction']:.5f} "
              f"(fail above {out.evidence['max_fraction']})  data.scale {scale.status:4s} "
              f"prescaled={found['kind'] + ' over ' + found['pool'] if found else None}")


if __name__ == "__main__":
    main()
