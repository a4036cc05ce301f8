"""torch and torch.nn.functional for the task modules, imported on first use.

Loading and inspecting data ask a task what it is (`has_classes`, `stratify`) without training anything;
`recipe inspect` never imports torch (a second of start-up on a busy machine), so the task modules must not
import it either until a method computes something."""
from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self._module), attr)
        setattr(self, attr, value)          # later lookups are plain attribute reads
        return value


torch = _Lazy("torch")
F = _Lazy("torch.nn.functional")
