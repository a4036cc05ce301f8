"""Sizes in bytes from config values: data.memory_budget's '2GB', '512MiB' or a plain number."""
from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value) -> int:
    """'2GB' -> 2_000_000_000, '512MiB' -> 536_870_912, 1000 or '1000' -> 1000 (data.memory_budget)."""
    if isinstance(value, bool):
        _bad_size(value)
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"must be > 0 bytes (got {value})")
        return int(value)
    text = value
    m = _SIZE.fullmatch(str(text))
    if not m:
        _bad_size(text)
    size = float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]
    if size < 1:
        raise ValueError(f"must be > 0 bytes (got {text!r})")
    return int(size)


def _bad_size(value):
    raise ValueError(f"must be a number of bytes or a size like '512MB', '2GB', '1.5GiB' (got {value!r})")
