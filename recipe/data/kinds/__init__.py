"""Data kinds as objects: `choose(cfg)` returns the DataKind that reads, splits, encodes and fingerprints a
config's data and declares inspect's checks and pictures for it; `register` adds one."""
from recipe.data.kinds.base import DataCheck, DataKind, spec
from recipe.data.kinds.look import Look
from recipe.data.kinds.registry import choose, get, load, names, refine, register, unregister
from recipe.data.kinds import table, images, text, table_stream  # noqa: F401,E402 (registers the built-in kinds)

__all__ = ["DataCheck", "DataKind", "Look", "choose", "get", "load", "names", "refine", "register", "spec",
           "unregister"]
