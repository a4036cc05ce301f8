"""The base of every config section: unknown keys are errors (a typo must not be silently ignored)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # NaN and inf are never a sensible learning rate, fraction or budget: refuse them with the key path
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
