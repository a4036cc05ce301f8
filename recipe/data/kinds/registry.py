"""The data-kind registry: name -> DataKind instance, and which kind reads a config. Registering is the only
step a new kind needs; its check ids join the check catalog while it is registered."""
from __future__ import annotations

from recipe import checks as C
from recipe.errors import ConfigError

_KINDS: dict = {}


def register(cls):
    """Class decorator: make `cls.name` a data kind `recipe.data.load` can choose, with its checks' specs."""
    if cls.name in _KINDS and type(_KINDS[cls.name]) is not cls:
        raise ValueError(f"data kind '{cls.name}' is registered twice ({type(_KINDS[cls.name]).__name__}, "
                         f"{cls.__name__})")
    for spec in cls.specs:
        if spec.id in C.CATALOG and C.CATALOG[spec.id] != spec:
            raise ValueError(f"data kind '{cls.name}' adds check '{spec.id}', which the catalog already holds")
    for spec in cls.specs:
        C.CATALOG[spec.id] = spec
    _KINDS[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a kind and the check ids it added (tests that register a toy kind clean up with this)."""
    kind = _KINDS.pop(name, None)
    for spec in getattr(kind, "specs", ()):
        C.CATALOG.pop(spec.id, None)


def get(name: str):
    """The registered kind called `name` (an instance)."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(f"data.kind: unknown data kind '{name}' (known: {', '.join(sorted(_KINDS))})") from None


def names() -> list[str]:
    return sorted(_KINDS)


def _by_priority() -> list:
    return sorted(_KINDS.values(), key=lambda k: -k.priority)    # stable: registration order breaks ties


def choose(cfg):
    """The kind that reads cfg's data: data.kind where the config has that key, else the highest-priority kind
    that claims the source (the table kind claims any source no other kind does)."""
    named = getattr(cfg.data, "kind", None)
    if named:
        return get(named)
    for kind in _by_priority():
        if kind.claims(cfg):
            return kind
    raise ConfigError(f"data.source: no data kind reads {cfg.data.source or cfg.data.train!r} "
                      f"(known kinds: {', '.join(names())})")


def refine(kind, ds):
    """After the read: a registered subclass of `kind` that fits the loaded data (image-shaped rows of a table
    are images), else `kind` itself."""
    for other in _by_priority():
        if other is not kind and isinstance(other, type(kind)) and other.fits(ds):
            return other
    return kind


def load(cfg):
    """Load cfg's data with the kind that reads it; the Dataset names the kind that owns its checks."""
    kind = choose(cfg)
    ds = kind.load(cfg)
    ds.kind = refine(kind, ds).name
    return ds
