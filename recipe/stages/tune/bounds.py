"""What tune.boundary may suggest: a widened range never leaves the parameter's valid values.

The valid values come from the config schema itself (`model.dropout` is `ge=0, lt=1`, `train.lr` is `gt=0`,
`train.weight_decay` is `ge=0`), so a suggestion can never be a negative dropout, a dropout of 1 or more, or
a learning rate of 0. A best value at the end of a range that already reaches a valid bound (dropout 0 when
the range starts at 0) has nothing past it: that is reported, not advised against.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import BaseModel


def valid_bounds(key: str) -> tuple[Optional[float], bool, Optional[float], bool]:
    """(low, low_inclusive, high, high_inclusive) of a dotted config key; None where the schema sets no bound."""
    from recipe.config import Config

    node: Any = Config
    field = None
    for part in key.split("."):
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return None, True, None, True
        field = node.model_fields[part]
        node = field.annotation
    lo, lo_in, hi, hi_in = None, True, None, True
    for m in field.metadata if field is not None else []:
        for name, inclusive, is_low in (("ge", True, True), ("gt", False, True), ("le", True, False),
                                        ("lt", False, False)):
            v = getattr(m, name, None)
            if v is None:
                continue
            if is_low:
                lo, lo_in = float(v), inclusive
            else:
                hi, hi_in = float(v), inclusive
    return lo, lo_in, hi, hi_in


def widen(key: str, p: dict, side: str) -> tuple[str, bool]:
    """(advice, at_valid_edge): how far to move the range's `side` end, kept inside the valid values; True
    when that end already sits on a valid bound and nothing lies past it."""
    if "choices" in p:
        return (f"add a choice {'after' if side == 'high' else 'before'} "
                f"{p['choices'][-1 if side == 'high' else 0]!r}", False)
    lo, hi = float(p["low"]), float(p["high"])
    vlo, vlo_in, vhi, vhi_in = valid_bounds(key)
    if p.get("log"):
        span = math.sqrt(hi / lo)
        new = hi * span if side == "high" else lo / span
    else:
        new = hi + (hi - lo) / 2 if side == "high" else lo - (hi - lo) / 2
    if side == "low" and vlo is not None:
        if lo <= vlo:
            return f"{lo:.3g} is the lowest valid value of {key}: nothing lies below it", True
        if new < vlo or (new == vlo and not vlo_in):
            new = vlo if vlo_in else (lo + vlo) / 2     # a bound that is itself invalid (lr > 0): halfway to it
    if side == "high" and vhi is not None:
        if hi >= vhi:
            return f"{hi:.3g} is the highest valid value of {key}: nothing lies above it", True
        if new > vhi or (new == vhi and not vhi_in):
            new = vhi if vhi_in else (hi + vhi) / 2     # dropout < 1: halfway from the range's end to 1
    limit = ""
    if (side == "low" and vlo is not None and new in (vlo, (lo + vlo) / 2)) or \
            (side == "high" and vhi is not None and new in (vhi, (hi + vhi) / 2)):
        bound = vlo if side == "low" else vhi
        op = {("low", True): ">=", ("low", False): ">", ("high", True): "<=", ("high", False): "<"}[
            (side, vlo_in if side == "low" else vhi_in)]
        limit = f" ({key} must be {op} {bound:g})"
    return f"{'raise high' if side == 'high' else 'lower low'} of tune.space.{key} to about {new:.3g}{limit}", False
