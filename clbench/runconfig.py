"""Run config files: ``clbench run --config run.toml``, and the ``run.toml`` every run writes.

A run config names what ``clbench run`` flags name, as TOML::

    benchmark = "digits-split"          # a name or a benchmark .toml file
    strategies = ["lora", "finetune"]   # or one string "lora,finetune"
    seeds = [0, 1]
    backbone = "mlp:128"
    device = "cpu"
    out = "runs"
    data_root = "/data"
    allow_download = false
    kv_cache = "full"
    loggers = ["tensorboard"]
    progress = true

    [settings]                          # -S: a bare key goes to every strategy that has it
    epochs = 2
    [settings.lora]                     # a table goes to one strategy (-S lora.rank=4)
    rank = 4

Every key is optional (the benchmark may come from the command line). Flags given on the command
line override the file; ``-S`` settings override the file's settings key by key. The file is
checked completely before anything runs: an unknown key, a wrong type or a TOML syntax error is
one line naming the file and the key.

Every run writes ``RUN_DIR/run.toml``: the configuration it actually ran with (one strategy, one
seed, the backbone spec, the device it resolved to, every strategy setting with its value), so
``clbench run --config RUN_DIR/run.toml --out OTHER`` runs it again as it is.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

FILE = "run.toml"
"""The resolved configuration each run writes into its directory."""

_TYPES: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "benchmark": ("a string", str),
    "backbone": ("a string", str),
    "device": ("a string", str),
    "out": ("a string (a folder)", str),
    "data_root": ("a string (a folder)", str),
    "kv_cache": ("a string", str),
    "allow_download": ("true or false", bool),
    "progress": ("true or false", bool),
}
_LISTS = {"strategies": str, "seeds": int, "loggers": str}
KEYS = (*_TYPES, *_LISTS, "settings")


@dataclass
class RunConfig:
    """A checked run config file; ``None``/empty = not set in the file."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    """``-S`` assignments (``key`` or ``strategy.key``) as TOML literals."""

    def get(self, key: str) -> Any:
        return self.values.get(key)


def literal(value: Any) -> str:
    """A TOML literal for a setting value, as ``-S key=VALUE`` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} has no TOML literal here")


def _check_list(path: Path, key: str, value: Any, kind: type) -> list[Any]:
    if kind is str and isinstance(value, str):  # "lora,finetune" as on the command line
        value = [part.strip() for part in value.split(",")]
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    what = "strings" if kind is str else "integers"
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise UsageError(f"{path}: {key!r} must be a non-empty list of {what}, got {value!r}")
    if kind is str and not all(v.strip() for v in value):
        raise UsageError(f"{path}: {key!r} has an empty name: {value!r}")
    return value


def _settings(path: Path, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: 'settings' must be a table ([settings]), got {table!r}")
    out: dict[str, str] = {}
    for key, value in table.items():
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, item in pairs:
            name = f"{key}.{sub}" if sub is not None else key
            if isinstance(item, dict):
                raise UsageError(f"{path}: setting {name!r} is a table; settings are key = value, or [settings.STRATEGY] tables of them")
            try:
                out[name] = literal(item)
            except TypeError:
                raise UsageError(f"{path}: setting {name!r} is a {type(item).__name__}; settings are numbers, strings, booleans or lists") from None
    return out


def load_run_config(path: Path) -> RunConfig:
    """Read and check a run config file.

    Raises:
        UsageError: missing or unreadable file, TOML syntax error, unknown key, wrong type (one
            line naming the file and the key).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"run config {path} not found") from None
    except IsADirectoryError:
        raise UsageError(f"run config {path} is a folder; give a .toml file (a run's own is RUN_DIR/{FILE})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read run config {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))} (strategy settings go in a [settings] table); "
                         f"valid: {', '.join(KEYS)}")
    config = RunConfig(path)
    for key, value in data.items():
        if key == "settings":
            config.settings = _settings(path, value)
        elif key in _LISTS:
            config.values[key] = _check_list(path, key, value, _LISTS[key])
        else:
            what, kind = _TYPES[key]
            if not isinstance(value, kind) or (kind is str and not value.strip()):
                raise UsageError(f"{path}: {key!r} must be {what}{' (not empty)' if kind is str else ''}, got {value!r}")
            config.values[key] = value
    return config


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def dump_toml(data: dict[str, Any]) -> str:
    """TOML text for a run config: top-level values, then ``[settings.STRATEGY]`` tables."""
    lines = [f"{_key(k)} = {literal(v)}" for k, v in data.items() if k != "settings" and v is not None]
    for strategy, values in (data.get("settings") or {}).items():
        lines += ["", f"[settings.{_key(strategy)}]"]
        lines += [f"{_key(k)} = {literal(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def resolved(options: Any, backbone: str, device: str, strategy_config: dict[str, Any], strategy: str) -> dict[str, Any]:
    """The configuration one run ran with, as :func:`dump_toml` writes it (``RUN_DIR/run.toml``).

    Paths are made absolute so the file runs the same from any folder; the strategy's settings
    are all listed with their values (unset ``None`` ones are left out: they mean "the default").
    """
    bench = Path(options.benchmark)
    benchmark = str(bench.resolve()) if options.benchmark.endswith(".toml") else options.benchmark
    return {
        "benchmark": benchmark,
        "strategies": [strategy],
        "seeds": [options.seed],
        "backbone": backbone,
        "device": device,
        "out": str(options.out),
        "data_root": str(Path(options.data_root).resolve()) if options.data_root else None,
        "allow_download": bool(options.allow_download),
        "kv_cache": options.kv_cache,
        "loggers": list(options.loggers) or None,
        "settings": {strategy: {k: v for k, v in strategy_config.items() if v is not None}},
    }
