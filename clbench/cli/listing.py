"""``clbench list`` and ``clbench show``: what is installed, and what one component is."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Mapping
from typing import Any

from clbench import registry
from clbench.cli import static
from clbench.cli.text import plain, summary, wrap, wrap_doc
from clbench.errors import UsageError


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("list", help="list installed strategies, benchmarks and backbones",
                       description="List registered components with the package that provides each. "
                                   "A plugin that fails to import is shown with its error; the others still load.")
    p.add_argument("kind", nargs="?", choices=["strategies", "benchmarks", "backbones", "loggers"], help="only this kind")
    p.set_defaults(handler=cmd_list)
    s = sub.add_parser("show", help="describe a benchmark or strategy",
                       description="Show a benchmark's tasks, protocol and defaults, or a strategy's settings.",
                       epilog="examples:\n  clbench show digits-split\n  clbench show lora", formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("name", help="benchmark or strategy name")
    s.set_defaults(handler=cmd_show)


def _plugin_summary(plugin: registry.Plugin) -> str:
    """The first paragraph of the component's docstring.

    clbench's own components are read from source (importing them would import torch); a
    third-party plugin is imported, so that one that fails to load is listed with its error.
    """
    doc = static.static_docstring(plugin.value) if registry.normalize(plugin.dist) == registry.OWN_DISTRIBUTION else None
    if doc is None:
        try:
            doc = plugin.load().__doc__
        except UsageError as exc:
            return f"ERROR: {exc}"
    return summary(doc)


def _rows(kind: str, suffix: str = "") -> list[tuple[str, str, str]]:
    return [(f"{p.name}{suffix}", f"{p.dist} {p.version}", _plugin_summary(p)) for p in registry.plugins(kind)]


def _benchmark_rows() -> list[tuple[str, str, str]]:
    from clbench.api.benchmark import load_benchmark_file

    index, errors = registry.benchmark_index()
    rows = []
    for name, sources in sorted(index.items()):
        for source in sources:
            try:
                spec = load_benchmark_file(source.path)
                text = f"{spec.protocol}, {len(spec.trained_tasks)} tasks: {summary(spec.description)}"
            except UsageError as exc:
                text = f"ERROR: {exc}"
            label = name if len(sources) == 1 else f"{source.plugin.dist}/{name} (name claimed twice)"
            rows.append((label, f"{source.plugin.dist} {source.plugin.version}", text))
    rows += [(qualified, "", f"ERROR: {message}") for qualified, message in errors.items()]
    return rows


def _print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Name and package columns, then the summary wrapped at word boundaries under its column."""
    print(f"{title}:")
    if not rows:
        print("  (none)")
    width = max((len(r[0]) for r in rows), default=0)
    pkg = max((len(r[1]) for r in rows), default=0)
    column = 2 + width + 2 + pkg + 2
    for name, package, text in rows:
        lead = f"  {name:<{width}}  {package:<{pkg}}  "
        # an error stays on one line, whole, so that it can be searched for and copied
        print((lead + (text if text.startswith("ERROR:") else wrap(text, indent=column)[column:])).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else ["benchmarks", "strategies", "backbones", "loggers"]
    builders = {"strategies": lambda: _rows("strategies"), "benchmarks": _benchmark_rows, "backbones": lambda: _rows("backbones", ":…"),
                "loggers": lambda: _rows("loggers")}
    for i, kind in enumerate(kinds):
        if i:
            print()
        _print_table(kind, builders[kind]())
    if registry.autoload_disabled():
        print(f"\n(third-party plugins not loaded: {registry.DISABLE_ENV} is set)")
    return 0


def _field_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the Attributes sections of a class and its bases' docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.cleandoc(klass.__doc__ or "")
        section = text.split("Attributes:", 1)[1] if "Attributes:" in text else ""
        current = None
        for line in section.splitlines():
            match = re.match(r"\s{4}(\w+): (.*)", line)
            if match:
                current = match.group(1)
                docs[current] = match.group(2)
            elif current and line.startswith("        "):
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break
    return docs


@dataclasses.dataclass(frozen=True)
class StrategyFacts:
    """What ``clbench show`` prints about a strategy class (its :class:`clbench.api.Strategy`
    class attributes and docstrings)."""

    doc: str | None
    module_doc: str | None
    Config: type
    backbone_kinds: frozenset[str]
    adapter_placement: str
    adapter_placement_by_kind: Mapping[str, str]

    @classmethod
    def of_class(cls, klass: Any) -> StrategyFacts:
        module = sys.modules.get(klass.__module__)
        return cls(klass.__doc__, module.__doc__ if module else None, klass.Config, frozenset(klass.backbone_kinds),
                   klass.adapter_placement, dict(klass.adapter_placement_by_kind))

    @classmethod
    def from_source(cls, value: str) -> StrategyFacts | None:
        """The facts of the class ``module:Class`` read from its source, importing only the module
        that defines its ``Config`` (a built-in strategy's ``config.py``, which does not import
        torch); ``None`` when the source says something the reader cannot follow."""
        try:
            found = static.definition(value)
            if found is None:
                return None
            values = {}
            for attr in ("backbone_kinds", "adapter_placement", "adapter_placement_by_kind"):
                values[attr] = static.value_of(*static.class_assignment(value, attr))
            config, where = static.class_assignment(value, "Config")
            if not isinstance(config, ast.Name):
                return None
            home, _, name = static.reference(where, config.id).partition(":")
            config_class = getattr(importlib.import_module(home), name)
        except static.Unknown:
            return None
        return cls(ast.get_docstring(found.node, clean=False), static.module_docstring(found.module), config_class,  # type: ignore[arg-type]
                   frozenset(values["backbone_kinds"]), values["adapter_placement"], dict(values["adapter_placement_by_kind"]))


def strategy_facts(name: str) -> tuple[StrategyFacts, registry.Plugin]:
    """The facts of the strategy registered as ``name``: clbench's own read from source (so
    ``clbench show`` starts without torch), a third party's or a ``NAME:ARG`` from the class."""
    plugin = registry.resolve("strategies", name)
    if registry.normalize(plugin.dist) == registry.OWN_DISTRIBUTION and plugin.argument is None:
        facts = StrategyFacts.from_source(plugin.value)
        if facts is not None:
            return facts, plugin
    cls, plugin = registry.get_strategy(name)
    return StrategyFacts.of_class(cls), plugin


def show_strategy(name: str) -> None:
    facts, plugin = strategy_facts(name)
    print(f"strategy {plugin.name}  ({plugin.dist} {plugin.version}, {plugin.value})")
    print(wrap_doc(facts.doc))
    if facts.module_doc:
        print("\n" + wrap_doc(facts.module_doc))
    print(f"\nbackbones: {', '.join(sorted(facts.backbone_kinds))}")
    print(_training_defaults(facts))
    print("\nsettings (-S key=value), with the value that applies on each backbone kind; None = the benchmark's value;\n"
          "[ours] = not the paper's or the official code's default:")
    docs = _field_docs(facts.Config)
    per_kind = _values_per_kind(facts)
    departures = getattr(facts.Config, "DEPARTURES", {})
    for field in dataclasses.fields(facts.Config):
        if per_kind is not None:
            shown = _kind_values(per_kind, field.name)
        else:
            shown = repr(field.default) if field.default is not dataclasses.MISSING else "(required)"
        mark = " [ours]" if field.name in departures else ""
        print(wrap(f"{field.name} = {shown}{mark}: {plain(docs.get(field.name, ''))}", indent=6, first=2))
    if departures:
        print("\ndefaults that are ours, not the paper's or the official code's (docs/strategies/NAME.md, \"Differs from the paper\"):")
        for name, why in departures.items():
            print(wrap(f"{name} (ours): {plain(why)}", indent=6, first=2))


def _values_per_kind(facts: StrategyFacts) -> dict[str, dict[str, Any]] | None:
    """``Config().for_kind(kind)`` for each backbone kind the strategy supports (None when the
    config cannot be built without settings)."""
    try:
        config = facts.Config()
    except (TypeError, ValueError, UsageError):
        return None
    per_kind = {kind: config.for_kind(kind) for kind in sorted(facts.backbone_kinds)}
    for kind, values in per_kind.items():  # unset targets: the strategy's placement, which each backbone maps to its layers
        if "targets" in values and not values["targets"]:
            values["targets"] = facts.adapter_placement_by_kind.get(kind, facts.adapter_placement)
    return per_kind


def _kind_values(per_kind: dict[str, dict[str, Any]], key: str) -> str:
    """``8`` when every kind agrees, else ``8 (classic, llm) / 16 (clip)``."""
    groups: dict[str, list[str]] = {}
    for kind, values in per_kind.items():
        value = values.get(key)
        groups.setdefault(repr(tuple(value) if isinstance(value, list) else value), []).append(kind)
    if len(groups) == 1:
        return next(iter(groups))
    return " / ".join(f"{value} ({', '.join(kinds)})" for value, kinds in groups.items())


def _training_defaults(facts: StrategyFacts) -> str:
    """The training settings the strategy sets per backbone kind (over the benchmark's ``[train]``)."""
    lines = ["\ntraining budget by backbone kind (what replaces the benchmark's [train] defaults; -S overrides both):"]
    try:
        config = facts.Config()
    except (TypeError, ValueError, UsageError) as exc:  # a config with required settings
        return lines[0] + f"\n  (needs settings first: {exc})"
    for kind in sorted(facts.backbone_kinds):
        changed = {k: v for k, v in config.train_overrides(kind).items() if v is not None}
        lines.append(f"  {kind}: " + (", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "the benchmark's"))
    return "\n".join(lines)


def _compact(values: object) -> str:
    """``a..b`` for a contiguous run of integers (long class lists), else the value as is."""
    if isinstance(values, list) and len(values) > 3 and all(isinstance(v, int) for v in values) \
            and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}..{values[-1]}"
    return str(values)


def _benchmark_budget(spec: Any) -> str:
    """The default budget per task, with step counts where tasks state their training-set size."""
    from clbench.budget import steps_per_task

    t = spec.train
    if t.iterations is not None:
        steps = f"{t.iterations} optimizer steps per task"
    else:
        steps = f"{t.epochs} epoch(s) per task: steps = {t.epochs} × ⌈train examples / {t.batch_size * t.grad_accum}⌉"
        sized = [(task.name, task.options["n_train"]) for task in spec.trained_tasks if isinstance(task.options.get("n_train"), int)]
        if sized:
            steps += " (" + ", ".join(f"{name}: {steps_per_task(n, t)}" for name, n in sized) + ")"
    accum = f" × {t.grad_accum} accumulated" if t.grad_accum != 1 else ""
    per_strategy = "".join(f"\n  {name}: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items())
                           for name, settings in spec.strategy_train.items())
    if per_strategy:
        per_strategy = "\nper-strategy settings of this benchmark (the same steps and batch for every strategy; -S overrides them):" + per_strategy
    return (f"default budget: {steps}; batch {t.batch_size}{accum}; lr {t.lr:g} ({t.optimizer}, {t.scheduler} schedule)"
            f"{per_strategy}\n"
            "  strategies may override it per backbone kind (clbench show STRATEGY lists theirs); every run logs and records "
            "the budget it used (results.json: budget)")


def show_benchmark(name: str) -> None:
    spec, _ = registry.load_benchmark(name)
    print(f"benchmark {spec.name} v{spec.version}  ({spec.source})")
    print(wrap_doc(spec.description))
    print(f"\nprotocol: {spec.protocol}\ndefault backbone: {spec.backbone}")
    print(f"default strategies: {', '.join(spec.strategies)}; seeds: {', '.join(map(str, spec.seeds))}")
    print(f"headline metrics: {', '.join(spec.metrics)}")
    train = dataclasses.asdict(spec.train)
    print("training: " + ", ".join(f"{k}={v}" for k, v in train.items() if v is not None))
    print(_benchmark_budget(spec))
    from clbench.classcounts import task_class_count

    counts = [task_class_count(t.loader, t.options) for t in spec.tasks]
    known = [c for c, t in zip(counts, spec.tasks, strict=True) if c is not None and not t.eval_only]
    total = f"; {sum(known)} classes in all" if known and len(known) == len(spec.trained_tasks) else ""
    print(f"\ntasks ({len(spec.trained_tasks)} trained, {len(spec.probes)} eval-only{total}):")
    width = max(len(t.name) for t in spec.tasks)
    for i, (task, count) in enumerate(zip(spec.tasks, counts, strict=True), start=1):
        options = ", ".join(f"{k}={_compact(v) if k == 'classes' else v}" for k, v in task.options.items())
        classes = f"{count} classes" if count is not None else ""
        role = "probe" if task.eval_only else f"task {i}"
        print(f"  {role:<7} {task.name:<{width}}  {classes:>11}  {task.loader} [{task.metric}] {options}")


def cmd_show(args: argparse.Namespace) -> int:
    shown = False
    index, _ = registry.benchmark_index()
    if args.name.endswith(".toml") or registry.normalize(args.name.rpartition("/")[2]) in index:
        show_benchmark(args.name)
        shown = True
    base = args.name.rpartition("/")[2].partition(":")[0]  # NAME of a NAME:ARG strategy (avalanche:EWC)
    if any(p.name == registry.normalize(base) for p in registry.plugins("strategies")):
        if shown:
            print()
        show_strategy(args.name)
        shown = True
    if not shown:
        known = sorted(set(index) | {p.name for p in registry.plugins("strategies")})
        raise UsageError(registry.unknown_name_message("benchmark or strategy", args.name, known))
    return 0
