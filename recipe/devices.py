"""Device names recipe accepts (auto, cpu, cuda, cuda:N), checked without importing torch."""
from __future__ import annotations

import re

from recipe.errors import RecipeError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> str:
    """--device must be auto, cpu, cuda or cuda:N; RecipeError otherwise (before any work starts)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise RecipeError(f"--device: must be auto, cpu, cuda or cuda:N (got '{name}')")
    return name
