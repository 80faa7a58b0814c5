"""Strategy config overrides: ``-S key=value`` strings checked against a config dataclass.

Values are read as TOML literals (``8``, ``5e-4``, ``true``, ``[0.9, 0.999]``, ``"q"``), with bare
words taken as strings and comma lists (``q,v``) accepted for tuple fields, then checked
against the field's declared type. Errors name the key and list the valid fields.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable
from typing import Any

from clbench.errors import UsageError
from clbench.validation import check_number


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Split ``key=value`` strings; a key may be qualified as ``strategy.key``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad -S {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(key: str, raw: str, annotation: Any) -> Any:
    value = _literal(raw)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value in ("none", "None", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, raw, arg)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if errors else f"bad value for {key}: {raw!r}")
    if origin is tuple:
        items = value if isinstance(value, list) else [v for v in str(raw).split(",") if v.strip()] if raw else []
        item_types = args[:1] * len(items) if len(args) == 2 and args[1] is Ellipsis else args
        if len(item_types) != len(items):
            raise UsageError(f"{key} takes {len(args)} values, got {len(items)}: {raw!r}")
        return tuple(_coerce(key, str(i) if not isinstance(i, str) else i, t) for i, t in zip(items, item_types, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key} takes true or false, got {raw!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"{key} takes an integer, got {raw!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{key} takes a number, got {raw!r}")
    if annotation is str:
        return value if isinstance(value, str) else raw
    raise UsageError(f"{key}: cannot parse a value of type {annotation!r} from the command line")


def config_fields(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def build_config(config_cls: type, overrides: dict[str, str], owner: str) -> Any:
    """Instantiate ``config_cls`` with string overrides, each checked against its field.

    Raises:
        UsageError: unknown key (listing valid fields), unparsable value, a non-finite number or
            an integer past its sane limit (:mod:`clbench.validation`), or a value the config's
            own validation rejects.
    """
    fields = config_fields(config_cls)
    values = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise UsageError(f"{owner} has no setting {key!r}; valid: {', '.join(sorted(fields))}")
        if raw.strip().lower() == "none" and key in getattr(config_cls, "NONE_IS_A_VALUE", ()):
            values[key] = "none"
            continue
        values[key] = _coerce(key, raw, fields[key])
        check_number(key, values[key], owner)
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{owner}: {exc}") from None


def split_overrides(assignments: dict[str, str], strategies: dict[str, type]) -> dict[str, dict[str, str]]:
    """Route ``-S`` keys to strategies: ``name.key`` to that strategy, bare keys to every
    strategy whose config has the field (an error if none has it)."""
    routed: dict[str, dict[str, str]] = {name: {} for name in strategies}
    for key, value in assignments.items():
        prefix, dot, field = key.rpartition(".")
        prefix = prefix.rpartition("/")[2]  # DIST/NAME.key targets NAME
        if dot and prefix in strategies:
            routed[prefix][field] = value
            continue
        owners = [n for n, cls in strategies.items() if key in config_fields(cls)]
        if not owners:
            valid = sorted({f for cls in strategies.values() for f in config_fields(cls)})
            raise UsageError(f"no selected strategy has a setting {key!r}; valid: {', '.join(valid)}")
        for name in owners:
            routed[name][key] = value
    return routed
