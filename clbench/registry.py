"""Entry-point registry for strategies, benchmarks and backbones.

Every component, built-in or third-party, registers the same way: an entry point in one of the
groups ``clbench.strategies`` (name -> Strategy class), ``clbench.backbones`` (spec prefix ->
factory ``(spec) -> Backbone``), ``clbench.benchmarks`` (-> a package holding ``*.toml``
benchmark files and optionally a ``LOADERS`` mapping) or ``clbench.loggers`` (name -> a
:class:`clbench.loggers.RunLogger` subclass). Rules:

- Entry points are read once; a plugin is imported only when its name is requested (listing
  names imports nothing).
- Names are lowercase-kebab; ``_`` is accepted as ``-``.
- A name claimed by two distributions is an error naming both; ``dist/name`` picks one.
- A plugin that fails to import is reported (``clbench list`` shows it) and the others load.
- ``CLBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` keeps only clbench's own entry points.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from dataclasses import dataclass
from functools import cache
from importlib import import_module, resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from clbench.errors import UsageError

GROUPS = {"strategies": "clbench.strategies", "backbones": "clbench.backbones", "benchmarks": "clbench.benchmarks", "loggers": "clbench.loggers"}
SINGULAR = {"strategies": "strategy", "backbones": "backbone", "benchmarks": "benchmark", "loggers": "logger"}
DISABLE_ENV = "CLBENCH_DISABLE_PLUGIN_AUTOLOAD"
OWN_DISTRIBUTION = "clbench"


@dataclass(frozen=True)
class Plugin:
    """One registered component (not yet imported)."""

    kind: str
    name: str
    value: str
    dist: str
    version: str
    entry_point: EntryPoint
    argument: str | None = None  # the ARG of a ``name:ARG`` strategy name

    @property
    def qualified(self) -> str:
        return f"{self.dist}/{self.name}"

    def load(self) -> Any:
        """Import the component; any failure becomes a one-line :class:`UsageError`.

        ``sys.exit()`` in a plugin's module body is a failure too: it must not end clbench.
        """
        try:
            return self.entry_point.load()
        except SystemExit as exc:
            raise UsageError(f"{SINGULAR[self.kind]} {self.name!r} from {self.dist} {self.version} failed to load ({self.value}): "
                             f"it called sys.exit({exc.code!r}) while being imported") from None
        except Exception as exc:  # a broken plugin must not take the CLI down with a traceback
            detail = (str(exc).strip().splitlines() or [""])[0][:300]
            raise UsageError(f"{SINGULAR[self.kind]} {self.name!r} from {self.dist} {self.version} failed to load ({self.value}): {type(exc).__name__}: {detail}") from None


def normalize(name: str) -> str:
    """Canonical spelling of a component name (lowercase, ``-`` for ``_``)."""
    return name.strip().lower().replace("_", "-")


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").lower() in {"1", "true", "yes"}


@cache
def _plugins(kind: str, only_own: bool) -> tuple[Plugin, ...]:
    found = []
    for ep in entry_points(group=GROUPS[kind]):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if only_own and normalize(dist) != OWN_DISTRIBUTION:
            continue
        version = ep.dist.version if ep.dist is not None else "unknown"
        found.append(Plugin(kind, normalize(ep.name), ep.value, dist, version, ep))
    return tuple(sorted(found, key=lambda p: (p.name, p.dist)))


def plugins(kind: str) -> tuple[Plugin, ...]:
    """Every registered plugin of ``kind`` (``strategies``, ``backbones`` or ``benchmarks``)."""
    if kind not in GROUPS:
        raise UsageError(f"unknown component kind {kind!r}; valid: {', '.join(GROUPS)}")
    return _plugins(kind, autoload_disabled())


def refresh() -> None:
    """Forget cached entry points and benchmark indexes (after installing a plugin)."""
    _plugins.cache_clear()
    _benchmark_index.cache_clear()


def resolve(kind: str, name: str) -> Plugin:
    """The plugin registered as ``name`` (or ``dist/name``).

    A strategy name may carry an argument, ``name:ARG`` (e.g. ``avalanche:EWC``): the plugin
    registered as ``name`` is returned under the full name ``name:ARG`` (so run directories and
    results keep the argument), and :func:`get_strategy` hands ``ARG`` to the class.

    Raises:
        UsageError: unknown name (with did-you-mean suggestions) or a name claimed twice.
    """
    if not name.strip():
        raise UsageError(f"empty {SINGULAR[kind]} name")
    dist_filter, _, bare = name.rpartition("/")
    bare, colon, argument = bare.partition(":")
    if colon and kind == "strategies":
        if not argument.strip():
            raise UsageError(f"strategy name {name!r} ends with ':'; write NAME:ARGUMENT, e.g. avalanche:Naive")
        plugin = resolve(kind, f"{dist_filter}/{bare}" if dist_filter else bare)
        return dataclasses.replace(plugin, name=f"{plugin.name}:{argument.strip()}", argument=argument.strip())
    key = normalize(bare)
    candidates = [p for p in plugins(kind) if p.name == key and (not dist_filter or normalize(p.dist) == normalize(dist_filter))]
    if len(candidates) > 1:
        owners = ", ".join(f"{p.dist} {p.version} ({p.value})" for p in candidates)
        raise UsageError(f"{SINGULAR[kind]} name {key!r} is registered by several packages: {owners}; pick one as DIST/{key}")
    if not candidates:
        raise UsageError(unknown_name_message(SINGULAR[kind], name, sorted({p.name for p in plugins(kind)})))
    return candidates[0]


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    """``unknown X 'name'; did you mean ...?`` with close matches, else the known names."""
    if len(name) > 100:
        return f"unknown {what} {name[:40]!r}... ({len(name)} characters); names are short, see clbench list"
    close = difflib.get_close_matches(normalize(name), known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(known) or 'none'}"
    return f"unknown {what} {name!r}; {hint}"


def strategies_for_kind(kind: str) -> list[str]:
    """Names of the installed strategies whose ``backbone_kinds`` include ``kind`` (those that load)."""
    names = []
    for plugin in plugins("strategies"):
        try:
            cls, _ = get_strategy(plugin.qualified)
        except UsageError:
            continue
        if kind in getattr(cls, "backbone_kinds", ()):
            names.append(plugin.name)
    return names


def unsupported_backbone_message(strategy: str, kinds: frozenset[str], kind: str, spec: str) -> str:
    """One line for a strategy that does not support a backbone kind, naming what to use instead."""
    others = [n for n in strategies_for_kind(kind) if n != strategy]
    instead = f"; strategies for {kind} backbones: {', '.join(others)}" if others else ""
    return f"strategy {strategy!r} supports {', '.join(sorted(kinds))} backbones, not {kind} ({spec}){instead}"


def get_strategy(name: str) -> tuple[type[Any], Plugin]:
    """The strategy class registered as ``name`` and its plugin record."""
    from clbench.api.strategy import Strategy

    plugin = resolve("strategies", name)
    cls = plugin.load()
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise UsageError(f"strategy {plugin.name!r} from {plugin.dist} ({plugin.value}) is not a clbench.api.Strategy subclass")
    if plugin.argument is not None:
        # ``name:ARG``: the class builds the concrete strategy (its own Config) for ARG.
        specialise = getattr(cls, "for_argument", None)
        if specialise is None:
            raise UsageError(f"strategy {plugin.name.partition(':')[0]!r} takes no ':ARGUMENT' suffix; use it as {plugin.name.partition(':')[0]!r}")
        cls = specialise(plugin.argument)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise UsageError(f"strategy {plugin.name!r}: for_argument did not return a clbench.api.Strategy subclass")
    return cls, plugin


def split_backbone_spec(spec: str) -> tuple[str | None, str]:
    """``DIST/KIND:REST`` -> ``(DIST, "KIND:REST")``; a spec without ``DIST/`` gives ``(None, spec)``.

    Only the part before the first ``:`` can name a distribution (``hf:/models/x`` has none).
    """
    head, colon, rest = spec.partition(":")
    dist, slash, kind = head.rpartition("/")
    if not slash:
        return None, spec
    return dist, f"{kind}{colon}{rest}"


def build_backbone(spec: str, *, allow_download: bool | None = None) -> Any:
    """Build a backbone from a spec ``[DIST/]KIND:REST`` using the factory registered for ``KIND``.

    The factory receives ``KIND:REST``; ``DIST/`` picks one package when two register ``KIND``.
    ``allow_download`` (the run's decision, :func:`clbench.asset_policy.resolve_downloads`) goes to
    factories that take an ``allow_download`` keyword; ``None`` leaves them their default.
    """
    from clbench.api.backbone import Backbone

    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty backbone spec; specs look like KIND:REST, e.g. mlp:128 (clbench list backbones)")
    if len(spec) > 4096:
        raise UsageError(f"backbone spec {spec[:40]!r}... is {len(spec)} characters long; specs are KIND:REST, e.g. mlp:128")
    dist, bare = split_backbone_spec(spec)
    prefix = bare.partition(":")[0]
    if normalize(prefix) not in {p.name for p in plugins("backbones")}:
        kinds = sorted({p.name for p in plugins("backbones")})
        close = difflib.get_close_matches(normalize(prefix), kinds, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"known kinds: {', '.join(kinds)}"
        raise UsageError(f"unknown backbone {spec!r}: no backbone kind {prefix!r} (specs look like KIND:REST); {hint}")
    try:
        plugin = resolve("backbones", f"{dist}/{prefix}" if dist else prefix)
    except UsageError as exc:
        if "several packages" not in str(exc):
            raise
        owners = sorted(p.dist for p in plugins("backbones") if p.name == normalize(prefix))
        example = OWN_DISTRIBUTION if OWN_DISTRIBUTION in owners else owners[0]
        raise UsageError(f"backbone kind {normalize(prefix)!r} is registered by several packages ({', '.join(owners)}); pick one with "
                         f"--backbone DIST/{bare}, e.g. --backbone {example}/{bare}") from None
    factory = plugin.load()
    backbone = factory(bare, allow_download=allow_download) if allow_download is not None and _takes_allow_download(factory) else factory(bare)
    if not isinstance(backbone, Backbone):
        raise UsageError(f"backbone factory {plugin.name!r} ({plugin.value}) returned {type(backbone).__name__}, not a clbench.api.Backbone")
    return backbone


def _takes_allow_download(factory: Any) -> bool:
    """Whether a backbone factory accepts the ``allow_download`` keyword (third-party factories
    written for ``factory(spec)`` keep working)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "allow_download" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@dataclass(frozen=True)
class BenchmarkSource:
    """Where a named benchmark's TOML lives and which package provides it."""

    name: str
    path: Path
    plugin: Plugin


@cache
def _benchmark_index(only_own: bool) -> tuple[dict[str, list[BenchmarkSource]], dict[str, str]]:
    index: dict[str, list[BenchmarkSource]] = {}
    errors: dict[str, str] = {}
    for plugin in _plugins("benchmarks", only_own):
        try:
            package = plugin.load()
            folder = Path(str(resources.files(package.__name__)))
        except UsageError as exc:
            errors[plugin.qualified] = str(exc)
            continue
        for path in sorted(folder.glob("*.toml")):
            index.setdefault(normalize(path.stem), []).append(BenchmarkSource(normalize(path.stem), path, plugin))
    return index, errors


def benchmark_index() -> tuple[dict[str, list[BenchmarkSource]], dict[str, str]]:
    """Every named benchmark (name -> sources) plus packages that failed to load."""
    return _benchmark_index(autoload_disabled())


def load_benchmark(name: str) -> tuple[Any, dict[str, Any]]:
    """Resolve a benchmark name (or a path to a ``.toml`` file) to its spec and extra loaders.

    Returns:
        ``(BenchmarkSpec, loaders)`` where ``loaders`` is the providing package's ``LOADERS``.
    """
    from clbench.api.benchmark import load_benchmark_file

    if not name.strip():
        raise UsageError("empty benchmark name; see clbench list benchmarks")
    if name.endswith(".toml"):
        path = Path(name)
        shown = name if len(name) <= 120 else f"{name[:60]}...({len(name)} characters)"
        try:
            exists = path.is_file()
        except OSError as exc:  # ENAMETOOLONG and friends are not "missing"
            raise UsageError(f"benchmark file {shown!r}: {exc.strerror or exc}") from None
        if not exists:
            raise UsageError(f"benchmark file {shown!r} does not exist")
        return load_benchmark_file(path), {}
    index, _ = benchmark_index()
    dist_filter, _, bare = name.rpartition("/")
    sources = [s for s in index.get(normalize(bare), []) if not dist_filter or normalize(s.plugin.dist) == normalize(dist_filter)]
    if len(sources) > 1:
        owners = ", ".join(f"{s.plugin.dist} ({s.path})" for s in sources)
        raise UsageError(f"benchmark name {normalize(bare)!r} is provided by several packages: {owners}; pick one as DIST/{normalize(bare)}")
    if not sources:
        raise UsageError(unknown_name_message("benchmark", name, sorted(index)))
    source = sources[0]
    package = import_module(source.plugin.load().__name__)
    return load_benchmark_file(source.path), dict(getattr(package, "LOADERS", {}))
