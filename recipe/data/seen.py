"""What train showed of each input column (levels, range, missing values), and which new rows fall outside it.

recipe.data records these facts at encode time from the TRAIN split only, as encoding["seen"]; the ensemble
stage copies the encoding into ensemble.json, and `recipe predict` flags each new row against it:

- `unseen`: a text column holds a level that train never had (the one-hot code is all zeros: the model has
  never seen that input, and its output there is a guess);
- `far`: a number lies beyond train's min or max by more than FAR_SPREADS spreads, where a column's spread is
  the larger of its train IQR and standard deviation. Slightly past the train max is ordinary sampling (a new
  sample beats the old record now and then); two spreads past it is extrapolation, for a network unbounded;
- `missing`: the cell is empty in a column that had no missing value in train, so the imputed fill stands in
  for a value whose absence the model never saw (a column train had holes in is imputed as in training).

Records written before these facts existed have no encoding["seen"]: predict then says it cannot check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

FAR_SPREADS = 2.0
QUANTILE_ROWS = 20_000
VERSION = 1
REASONS = ("unseen", "far", "missing")
WHY = {"unseen": "level never seen in train", "far": "far outside the train range",
       "missing": "missing, and train had no missing value there"}


def record_numeric(values: np.ndarray) -> dict[str, Any]:
    """Range facts of one train column (float values, NaN where missing)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    finite = v if ok.all() else v[ok]
    out: dict[str, Any] = {"kind": "number", "n": int(v.size), "missing": int(v.size - finite.size)}
    if not finite.size:
        return out
    # quartiles of an even sample of at most QUANTILE_ROWS values: the IQR to a few percent, at a fixed cost
    q1, q3 = np.quantile(finite[::max(1, finite.size // QUANTILE_ROWS)], [0.25, 0.75])
    lo, hi = float(finite.min()), float(finite.max())
    spread = max(float(q3 - q1), float(finite.std()))
    # a float32 matrix stores 5.1 as 5.0999999: never flag a value for being its own rounding
    margin = FAR_SPREADS * spread + 1e-6 * max(1.0, abs(lo), abs(hi))
    out.update(min=lo, max=hi, spread=spread, low=lo - margin, high=hi + margin)
    return out


def record_levels(values: np.ndarray) -> dict[str, Any]:
    """Missing-value facts of one train text column (its levels are encoding["categorical"][col])."""
    values = np.asarray(values, dtype=object)
    missing = int(np.count_nonzero(values == None))  # noqa: E711 (elementwise on an object array)
    if values.size and missing < values.size:     # NaN cells, which a reader may give for empty text cells
        missing += sum(1 for v in values if isinstance(v, float) and v != v)
    return {"kind": "text", "n": len(values), "missing": int(missing)}


def seen_block(columns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"version": VERSION, "far_spreads": FAR_SPREADS, "columns": columns}


@dataclass
class Flags:
    """Per-row findings on new rows: `col:reason` items per row, counts per column and reason."""

    n_rows: int
    checked: bool = True
    why_unchecked: str = ""
    per_row: list[list[str]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)      # "col:reason" -> what train had

    @classmethod
    def unchecked(cls, n_rows: int, why: str) -> "Flags":
        return cls(n_rows, checked=False, why_unchecked=why)

    def __post_init__(self) -> None:
        if self.checked and not self.per_row:
            self.per_row = [[] for _ in range(self.n_rows)]

    def add(self, col: str, reason: str, mask: np.ndarray, detail: str) -> None:
        rows = np.flatnonzero(mask)
        if not rows.size:
            return
        for r in rows:
            self.per_row[r].append(f"{col}:{reason}")
        self.counts.setdefault(col, {})[reason] = int(rows.size)
        self.detail[f"{col}:{reason}"] = detail

    @property
    def rows_flagged(self) -> int:
        return sum(1 for items in self.per_row if items)

    def items(self) -> list[tuple[str, str, int]]:
        return [(col, reason, n) for col, by in self.counts.items() for reason, n in by.items()]

    def summary(self) -> str:
        """One line: counts per column and reason."""
        if not self.checked:
            return f"input checks: not done ({self.why_unchecked})"
        if not self.counts:
            return f"input checks: all {self.n_rows} rows inside what train saw (levels, ranges, missing values)"
        parts = ", ".join(f"{col}:{reason} {n} row{'s' * (n != 1)}" for col, reason, n in self.items())
        return (f"input warnings: {self.rows_flagged} of {self.n_rows} rows hold inputs train never saw: {parts} "
                "(column recipe_warnings)")

    def refuse_if_any(self, path) -> None:
        refuse_if_any(self, path)

    def to_json(self) -> dict[str, Any]:
        if not self.checked:
            return {"checked": False, "why": self.why_unchecked}
        return {"checked": True, "rows_flagged": self.rows_flagged, "counts": self.counts, "detail": self.detail,
                "far_spreads": FAR_SPREADS}


def check_levels(flags: Flags, col: str, values: list, levels: list[str], facts: Optional[dict]) -> None:
    """Text column: levels train never had, and holes where train had none."""
    known = set(levels)
    missing = np.array([v is None for v in values], dtype=bool)
    unseen = np.array([v is not None and str(v) not in known for v in values], dtype=bool)
    shown = ", ".join(levels[:8]) + (f" and {len(levels) - 8} more" if len(levels) > 8 else "")
    flags.add(col, "unseen", unseen, f"train levels: {shown}")
    if facts is not None and facts.get("missing") == 0:
        flags.add(col, "missing", missing, f"no missing value in {facts.get('n')} train rows")


def check_numbers(flags: Flags, col: str, v: np.ndarray, facts: Optional[dict]) -> None:
    """Number column (NaN where empty): values far outside the train range, and holes where train had none."""
    if facts is None:
        return
    missing = np.isnan(v)
    if "low" in facts:
        with np.errstate(invalid="ignore"):
            far = ~missing & ((v < facts["low"]) | (v > facts["high"]))
        flags.add(col, "far", far, f"train range [{facts['min']:.6g}, {facts['max']:.6g}], flagged outside "
                                   f"[{facts['low']:.6g}, {facts['high']:.6g}] ({FAR_SPREADS:g} spreads)")
    if facts.get("missing") == 0:
        flags.add(col, "missing", missing, f"no missing value in {facts.get('n')} train rows")


def refuse_if_any(flags: Flags, path) -> None:
    """--strict: any flagged row (or inputs that could not be checked) is a DataError naming columns and counts."""
    from recipe.errors import DataError

    if not flags.checked:
        raise DataError(f"{path}: --strict, but the inputs cannot be checked against train: {flags.why_unchecked}; "
                        "nothing was written")
    if flags.counts:
        parts = [f"'{col}': {WHY[reason]}: {n} row{'s' * (n != 1)} ({flags.detail[f'{col}:{reason}']})"
                 for col, reason, n in flags.items()]
        raise DataError([f"{path}: --strict: {flags.rows_flagged} of {flags.n_rows} rows hold inputs train never "
                         f"saw, in {len(flags.counts)} column(s); nothing was written "
                         "(without --strict they are predicted and flagged in the column recipe_warnings)"] + parts)
