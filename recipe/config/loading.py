"""Config loading: YAML (alias-bomb guard), -o overrides, validation errors that name the key path."""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError

from recipe.config.schema import MAX_YAML_ALIASES, Config
from recipe.errors import ConfigError


def _count_aliases(text: str) -> int:
    return sum(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader))


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); re-save the config as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        if _count_aliases(text) > MAX_YAML_ALIASES:
            raise ConfigError(f"{path}: more than {MAX_YAML_ALIASES} YAML aliases; refusing a possible alias bomb")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


def load(path: Path | str, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file; every problem is reported at once."""
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of keys (got {type(raw).__name__})")
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(raw, key.split("."), value, key)
    cfg = validate(raw, source=str(path))
    cfg._base_dir = path.resolve().parent
    cfg._path = path.resolve()
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"-o {item}: expected key.path=value")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"-o {item}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def _set_path(raw: dict, parts: list[str], value: Any, full: str) -> None:
    if parts[0] == "checks" and len(parts) >= 3:
        # check ids are themselves dotted (data.imbalance): checks.<stage>.<name>[.key]
        parts = ["checks", f"{parts[1]}.{parts[2]}", *parts[3:]]
    node = raw
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        if part == "space" and node is raw.get("tune"):
            # tune.space keys are themselves dotted (train.lr): the next two parts name the parameter
            rest = parts[i + 1:]
            param = ".".join(rest[:2]) if len(rest) > 2 else ".".join(rest)
            space = node.setdefault("space", {}) or {}
            node["space"] = space
            if len(rest) <= 2:
                space[param] = value
                return
            space.setdefault(param, {})
            node, parts, i = space[param], [*rest[2:]], 0
            continue
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"{full}: '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
        i += 1
    node[parts[-1]] = value


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class that owns location `loc` (for did-you-mean)."""
    model: Any = Config
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) is Union:
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else annotation
    if args and type(annotation).__name__ == "UnionType":
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else annotation
    return annotation


def _key_problem(parts: list[str]) -> Optional[str]:
    model: Any = Config
    for i, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None if i == len(parts) else f"'{'.'.join(parts[:i])}' has no sub-keys"
        if part not in model.model_fields:
            close = difflib.get_close_matches(part, _field_names(model), n=1)
            return f"did you mean '{'.'.join(parts[:i] + [close[0]])}'?" if close else "unknown key"
        model = _unwrap(model.model_fields[part].annotation)
    return None


_MESSAGE_REWRITES = [
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be >= \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be > \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be <= \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be < \1"),
    (re.compile(r"^Value error, "), ""),
    (re.compile(r"^Assertion failed, "), ""),
]


def _format_error(err: dict) -> str:
    loc = tuple(err["loc"])
    # pydantic puts the failing union/literal member into loc; drop non-key parts
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _field_names(parent), n=1, cutoff=0.6) if parent else []
        hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
        allowed = f" (known keys: {', '.join(_field_names(parent))})" if parent and not close else ""
        return f"{path}: unknown key{hint}{allowed}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"], allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: must be one of {', '.join(allowed)} (got {err['input']!r}){hint}"
    msg = err["msg"]
    for pattern, repl in _MESSAGE_REWRITES:
        msg = pattern.sub(repl, msg)
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or err["type"].startswith("value_error") else f" (got {got!r})"
    return f"{path}: {msg}{shown}"


def validate(raw: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        messages = _unknown_check_ids(raw)
        for err in e.errors():
            line = _format_error(err)
            if line not in messages:
                messages.append(line)
        raise ConfigError(messages) from None


def _unknown_check_ids(raw: dict) -> list[str]:
    """Unknown ids under checks:, reported even when another error stops pydantic before its validator."""
    from recipe.checks import CATALOG

    out = []
    checks = raw.get("checks") if isinstance(raw, dict) else None
    for check_id in checks if isinstance(checks, dict) else ():
        if check_id not in CATALOG:
            close = difflib.get_close_matches(str(check_id), list(CATALOG), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            out.append(f"checks: unknown check id '{check_id}'{hint}")
    return out


def json_schema() -> dict:
    return Config.model_json_schema()
