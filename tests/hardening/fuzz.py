"""Config mutations for fuzzing (shared by tests/hardening/test_fuzz_config.py and scripts/reliability.py).

`mutate(config, pick)` applies one mutation to a valid config dict and returns (config, touched key paths,
as_override). `pick(options)` chooses one option: hypothesis's `data.draw(sampled_from(...))` in the test,
`random.Random.choice` in the reliability script, so both explore the same space.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable

from tests.conftest import IRIS

Pick = Callable[[list], Any]

BASE: dict[str, Any] = {
    "name": "fuzz",
    "seed": 0,
    "data": {"source": "builtin:iris", "target": "label", "missing": "fail", "max_categories": 50,
             "split": {"val": 0.15, "test": 0.15, "stratify": True}, "normalize": "standard", "augment": []},
    "model": {"kind": "mlp", "hidden": [32], "activation": "relu", "dropout": 0.0, "init": "default", "args": {}},
    "train": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 16, "epochs": 30,
              "early_stopping": {"patience": 5, "metric": "val_loss"}, "precision": "auto", "max_seconds": 60.0},
    "overfit": {"samples": 16, "steps": 150},
    "regularize": {"ladder": ["dropout", "weight_decay"], "seeds": 2, "target_error": 0.0, "budget_seconds": 100.0,
                   "jobs": 1},
    "tune": {"method": "random", "trials": 2, "jobs": 1, "pruner": "none", "storage": None,
             "space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                       "train.batch_size": {"choices": [16, 32]}}},
    "ensemble": {"top_k": 2, "method": "greedy", "seeds": 0, "long_epochs": 0, "distill": False},
    "checks": {"data.imbalance": {"severity": "warn", "reason": "fuzz"}},
}
assert IRIS  # the fuzz base is the fast iris experiment of conftest, spelled out in full

WRONG_VALUES = ["abc", "", [1, 2], {"a": 1}, True, False, 1.5, -1, 0, 2, 10 ** 12, -0.5, 1e-12, None, "1e-3",
                [None], {"low": 1}, "../../etc", float("inf"), float("nan")]
JUNK_KEYS = ["foo", "lr", "epoch", "hiden", "optimiser", "batchsize", "sead", "dat", "trian", "low", "x.y", "0"]


def leaves(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a nested dict (sections included), e.g. ('train', 'lr')."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out += leaves(v, prefix + (k,))
    return out


def _get(node: dict, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _misspell(key: str, pick: Pick) -> str:
    if len(key) < 3:
        return key + "x"
    i = pick(list(range(len(key) - 1)))
    how = pick(["swap", "drop", "double", "case"])
    if how == "swap":
        return key[:i] + key[i + 1] + key[i] + key[i + 2:] if key[i] != key[i + 1] else key + "s"
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "double":
        return key[:i] + key[i] + key[i:]
    return key.upper()


def mutate(config: dict, pick: Pick) -> tuple[dict, list[str], bool]:
    """One mutation: wrong type / out of range / null, unknown or misspelled key, wrong nesting, section as scalar."""
    cfg = copy.deepcopy(config)
    paths = leaves(cfg)
    kind = pick(["value", "value", "value", "unknown", "misspell", "nesting", "section"])
    if kind == "value":
        path = pick(paths)
        parent = _get(cfg, path[:-1])
        parent[path[-1]] = pick(WRONG_VALUES)
        return cfg, [".".join(path)], pick([False, False, True])
    if kind == "unknown":
        sections = [()] + [p for p in paths if isinstance(_get(cfg, p), dict)]
        where = pick(sections)
        key = pick(JUNK_KEYS)
        _get(cfg, where)[key] = pick(WRONG_VALUES)
        return cfg, [".".join(where + (key,))], False
    if kind == "misspell":
        path = pick(paths)
        parent = _get(cfg, path[:-1])
        new = _misspell(path[-1], pick)
        parent[new] = parent.pop(path[-1])
        return cfg, [".".join(path), ".".join(path[:-1] + (new,))], False
    if kind == "nesting":
        # a leaf moved into another section (e.g. train.lr under model)
        movable = [p for p in paths if len(p) == 2 and not isinstance(_get(cfg, p), dict)]
        path = pick(movable)
        targets = [k for k, v in cfg.items() if isinstance(v, dict) and k != path[0]]
        into = pick(targets)
        cfg[into][path[-1]] = _get(cfg, path[:-1]).pop(path[-1])
        return cfg, [".".join(path), f"{into}.{path[-1]}"], False
    section = pick([p for p in paths if isinstance(_get(cfg, p), dict)])
    _get(cfg, section[:-1])[section[-1]] = pick(["abc", 3, [1, 2], None, True])
    return cfg, [".".join(section)], False


def override_args(path: str, value: Any) -> list[str]:
    """The same mutation given on the command line: -o key.path=<YAML>."""
    text = json.dumps(value) if not (isinstance(value, float) and value != value) else ".nan"
    text = {"Infinity": ".inf", "-Infinity": "-.inf"}.get(text, text)
    return ["-o", f"{path}={text}"]


KEY_PATH = re.compile(r"^(?P<path>[^\s:]+(?: [^\s:]+)?)(?: \(line \d+, column \d+\))?: ")


def related(error_path: str, touched: list[str]) -> bool:
    """Does an error's key path name a mutated key (or the section or value holding it)?"""
    a = error_path
    return any(a == b or a.startswith(b + ".") or b.startswith(a + ".") for b in touched)
